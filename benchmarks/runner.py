"""One fit of one method on one simulated dataset, as a picklable job, and a pool that runs many.

Every benchmark is a list of ``Job``s: the same data (seeded simulation), the
same split (15 % of grids held out whole, §4.5), an optional nested training
fraction (Fig. 9), one method, scored by ``inference.evaluate.score``. Jobs
run in worker processes (``--jobs``), each with its own torch thread count,
so fit seconds within one run are measured under the same conditions; a
fresh process per job (``fresh=True``) also makes its peak memory its own.
Rows are appended to the results CSV as jobs finish, so an interrupted run
keeps what it measured and ``--resume`` skips it. Stop a run with Ctrl-C
or by killing its process group (``kill -- -PGID``): killing only the main
process leaves its workers finishing their fits, competing for the CPU.

Method names: every ``inference.methods.METHODS`` baseline, ``cen-<variant>``
(the Bayesian CEN: choice, mixture, context, worker) and ``map-<variant>``
(its MAP mode, whose objective is the paper's eq. 8); and ``limit``, no method but the simulation's
Bayes-optimal P(same) (``cen_bayes.limit``), the ceiling of every method's held-out scores.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import platform
import resource
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cen_bayes.atomic import write_csv, write_text
from models.energy import GAMMA

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
# The paper's embedding sizes (supplement A, §4.4, §F): CELEBA 4 (four listed attributes),
# RETINA 10 (attributes unknown), BIRDS 4; every method on a dataset uses the same K.
PAPER_K = {"celeba": 4, "retina": 10, "birds": 4, "tiny": 4, "categories": 10}  # categories: ours, K as retina
BAYES = ("cen-auto", "cen-kind", "cen-choice", "cen-mixture", "cen-context", "cen-worker", "map-mixture")
BASELINES = ("bcc", "siamese", "triplet", "csn", "paper-cen", "paper-worker", "paper-context")
ALL_METHODS = BAYES + BASELINES
REFERENCES = ("limit",)  # not fitted: the Bayes-optimal P(same) of a simulation (cen_bayes.limit)
KEYS = ("dataset", "seed", "fraction", "method", "K", "gamma", "grids")


@dataclass(frozen=True)
class Job:
    dataset: str
    seed: int
    method: str
    fraction: float = 1.0  # nested share of the training grids kept (learning curves)
    K: int | None = None  # None: the paper's K for the dataset
    gamma: float | None = None  # None: the method's default positive weight
    smoke: bool = False  # tiny sizes and few steps: checks the code runs
    device: str = "cpu"
    threads: int = 1
    grids: float = 1.0  # the crowd simulated with this many times the dataset's grids (benchmarks.limit_gap)

    @property
    def k(self) -> int:
        return self.K or PAPER_K.get(self.dataset, 10)

    @property
    def gamma_value(self) -> float:
        return GAMMA if self.gamma is None else self.gamma


@functools.lru_cache(maxsize=2)
def _load(dataset: str, seed: int, smoke: bool, grids: float = 1.0):
    from cen_bayes.crowd import CrowdData
    from cen_bayes.datasets import DATASETS, load_dataset
    from cen_bayes.splits import split_by_grid
    n_grids = 60 if smoke else DATASETS[dataset].n_grids
    sim = load_dataset(dataset, seed=seed, n_grids=round(n_grids * grids))
    data = CrowdData.from_source(sim.table, name=f"simulated {dataset}")
    return sim, data, split_by_grid(data, 0.15, seed=seed)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def fit_job(job: Job, data, split, sim=None):
    """Fit ``job.method`` on ``split`` and score it: (``inference.evaluate`` result, the PairMethod or
    None for the Bayesian CEN, which keeps its model and draws in the result)."""
    from inference.evaluate import evaluate_method, fit_and_evaluate
    from inference.methods import make_method

    kind, _, variant = job.method.partition("-")
    if job.method == "limit":
        return _score_limit(job, data, split, sim), None
    if kind in ("cen", "map"):
        result = fit_and_evaluate(data, split, sim, variant=variant, K="auto" if variant == "auto" else job.k,
                                  map_mode=kind == "map",
                                  steps=20 if job.smoke else None, draws=10 if job.smoke else 100, psis_draws=0,
                                  seed=job.seed, device=job.device, progress=False, gamma=job.gamma_value)
        return result, None
    options = {"gamma": job.gamma_value} if kind == "paper" else {}
    if job.smoke:
        options.update({"steps": 20} if job.method == "bcc" else {"epochs": 1})
    method = make_method(job.method, data, sim, K=job.k, seed=job.seed, device=job.device, progress=False,
                         **options)
    return evaluate_method(method, data, split, sim, seed=job.seed), method


def run_job(job: Job) -> dict:
    """Fit and score one job; a flat row of the results table."""
    from cen_bayes.splits import training_fraction

    torch.set_num_threads(job.threads)
    sim, data, split = _load(job.dataset, job.seed, job.smoke, job.grids)
    if job.fraction < 1:
        split = training_fraction(data, split, job.fraction, seed=job.seed)
    gamma = job.gamma_value
    train_pairs = data.pairs.subset(split.pair_masks(data)[0])
    rss_before = _peak_rss_mb()
    if job.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result, method = fit_job(job, data, split, sim)
    if job.method.startswith("paper-"):
        with torch.no_grad():
            result.metrics["train_paper_loss"] = method.loss(data, train_pairs).item()
    m = result.metrics
    train_labels = train_pairs.label.numpy().astype(bool)
    m["train_accuracy"] = np.nan if job.method == "limit" else \
        float(((_train_p_same(result, method, data, train_pairs) > 0.5) == train_labels).mean())
    retrieval = m.get("attribute_retrieval", {})
    clustering = m.get("clustering", {})
    p_attr = result.p_attr
    row = {**{k: v for k, v in asdict(job).items() if k in KEYS}, "K": job.k, "gamma": gamma,
           "n_train_hits": m["n_train_hits"], "n_train_pairs": len(train_pairs),
           **{k: m["heldout"][k] for k in ("accuracy", "nll", "ece", "brier", "majority_accuracy")},
           "train_accuracy": m["train_accuracy"],
           "retrieval_mean": retrieval.get("mean_accuracy", np.nan),
           "retrieval_json": json.dumps({k: retrieval[k] for k in ("confusion", "confusion_dims",
                                                                    "per_attribute_accuracy", "row_entropy")})
           if retrieval else "",
           # posterior mean share of HITs on each dim (Fig. S4): what the K ablation reads
           "dim_share_json": json.dumps(np.round(p_attr[:, :job.k].mean(0), 5).tolist()) if p_attr is not None else "",
           **{f"{how}_{score}": clustering.get(how, {}).get(score, np.nan)
              for how in ("kmeans", "dpgmm") for score in ("mcc", "nmi", "f1")},
           "train_paper_loss": m.get("train_paper_loss", np.nan),
           "fit_seconds": m["fit_seconds"], "selection_seconds": m.get("selection_seconds", np.nan),
           "chosen": chosen_model(m), "peak_rss_mb": _peak_rss_mb(),
           "fit_rss_growth_mb": _peak_rss_mb() - rss_before,
           "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if job.device.startswith("cuda") else np.nan,
           "threads": job.threads, "device": job.device}
    return row


def _score_limit(job: Job, data, split, sim):
    """The ``limit`` pseudo-method: the simulation's Bayes-optimal P(same) of the held-out pairs,
    scored like a fitted method. Its "embedding" (clustering columns) is the true latent of the
    listed attributes; its fit seconds are the Monte Carlo's; nothing is trained."""
    import time

    from cen_bayes.limit import bayes_limit
    from inference.evaluate import score

    test_pairs = data.pairs.subset(split.pair_masks(data)[1])
    start = time.perf_counter()
    p_same = bayes_limit(sim, data, test_pairs, n_draws=200 if job.smoke else 2000, seed=job.seed)
    metrics = {"method": "limit", "K": job.k, "seed": job.seed, "fit_seconds": time.perf_counter() - start}
    latent = sim.latent[sim.attributes].set_axis(sim.latent.index.astype(str)).reindex(data.images.astype(str))
    return score(metrics, data, split, sim, test_pairs, p_same, latent.to_numpy(), None, None, job.seed)


def chosen_model(metrics: dict) -> str:
    """'kind K 10' when the fit chose its variant and K (``inference.select``), else ''."""
    return f"{metrics['variant']} K {metrics['K']}" if "selection" in metrics else ""


def _train_p_same(result, method, data, train_pairs) -> np.ndarray:
    """P(same) of the training pairs, to read the generalisation gap (train vs held-out accuracy)."""
    return (method or result.cen).predict_proba(data, train_pairs)  # the Bayesian CEN's result holds it


def run_jobs(jobs: list[Job], csv: Path, n_jobs: int = 1, fresh: bool = False, resume: bool = False,
             fn=run_job) -> pd.DataFrame:
    """Run ``fn`` (a picklable function of a job) on ``jobs`` in ``n_jobs`` worker processes,
    appending each row to ``csv`` as it lands.

    ``fresh``: one process per job (peak memory is the job's own). ``resume``:
    keep the rows already in ``csv`` and skip their jobs.
    """
    csv = Path(csv)
    csv.parent.mkdir(parents=True, exist_ok=True)
    version = code_version()
    done = pd.read_csv(csv) if resume and csv.exists() else pd.DataFrame()
    rows = done.to_dict("records")
    seen = {_key(r) for r in rows}
    todo = [job for job in jobs if _key({**asdict(job), "K": job.k, "gamma": job.gamma_value}) not in seen]
    if len(todo) < len(jobs):
        print(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} jobs already in {csv}", flush=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n_jobs, mp_context=context, max_tasks_per_child=1 if fresh else None) as pool:
        futures = {pool.submit(fn, job): job for job in todo}
        for n, future in enumerate(as_completed(futures), 1):
            row = {**future.result(), "code": version}
            rows.append(row)
            write_csv(pd.DataFrame(rows), csv, float_format="%.5g")  # a kill mid-write keeps the rows so far
            print(f"[{n}/{len(todo)}] {row['dataset']} seed {row['seed']} frac {row['fraction']:g} K {row['K']} "
                  f"γ {row['gamma']:g} "
                  f"{row['method']:13s} acc {row['accuracy']:.3f} nll {row['nll']:.3f} "
                  f"fit {row['fit_seconds']:.1f}s", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def _key(row: dict) -> tuple:
    gamma = row.get("gamma")
    gamma = None if gamma is None or (isinstance(gamma, float) and np.isnan(gamma)) else float(gamma)
    grids = row.get("grids")  # rows written before the column existed are the dataset's own size
    grids = 1.0 if grids is None or (isinstance(grids, float) and np.isnan(grids)) else float(grids)
    return (row["dataset"], int(row["seed"]), float(row["fraction"]), row["method"], int(row["K"]), gamma, grids)


def add_run_arguments(parser: argparse.ArgumentParser, jobs: bool = True) -> None:
    """The options every job-list benchmark shares: how its fits run and where its rows go."""
    if jobs:
        parser.add_argument("--jobs", type=int, default=2, help="worker processes, one torch thread each")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in the CSV, skip their fits")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and few steps: checks the script runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS))


def machine() -> str:
    """What the timings were measured on, for a report's first line."""
    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}"


def code_version() -> str:
    """The commit the fits run at, ``-dirty`` if tracked code outside ``benchmarks/results`` differs
    from it: every results row says which code made it, so rows of different versions are not
    silently mixed in one table."""
    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short=7", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if changed else "")


def code_line(frame: pd.DataFrame) -> str:
    """'code at `abc1234`' for a report's header, each version's row count when rows differ."""
    versions = frame["code"].fillna("not recorded") if "code" in frame else pd.Series("not recorded", frame.index)
    counts = versions.value_counts()
    if len(counts) == 1:
        return f"code at `{counts.index[0]}`" if counts.index[0] != "not recorded" else "code version not recorded"
    return "code at " + ", ".join(f"{v if v == 'not recorded' else f'`{v}`'} ({n} rows)" for v, n in counts.items())


def mean_sd(frame: pd.DataFrame, column: str, by: list[str], digits: int = 3) -> pd.Series:
    """'mean ± sd' (sd only with more than one seed) of ``column`` per group."""
    grouped = frame.groupby(by, sort=False)[column]
    mean, sd, n = grouped.mean(), grouped.std(), grouped.count()
    return pd.Series(["" if np.isnan(m) else f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if c > 1 else "")
                      for m, s, c in zip(mean, sd, n)], index=mean.index)


def write_results(frame: pd.DataFrame, report: str, out, stem: str) -> None:
    """A benchmark's results: ``<stem>.csv`` (one row per fit) and ``<stem>.md`` (the tables) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(frame, out / f"{stem}.csv", float_format="%.4f")
    write_text(out / f"{stem}.md", report)
    print(f"wrote {out / f'{stem}.csv'} and {out / f'{stem}.md'}")
