"""Do grids chosen by expected information gain teach the model faster than random grids? (issue 22)

    python -m benchmarks.active                  # retina and celeba, seeds 0-2, info and random, 10 rounds of 25
    python -m benchmarks.active --quick          # retina, seed 0, 3 rounds: the timing the full run scales from
    python -m benchmarks.active --smoke --out /tmp/x    # tiny sizes (what the tests run)
    python -m benchmarks.active --report-only    # redraw active.md and active.png from active.csv

An active-learning loop on a simulated crowd. Each sequence (dataset, seed,
strategy) starts from the HITs of 10 % of the simulation's grids, drawn at
random from those not held out, and then, round after round, fits the
Bayesian CEN on everything it has, scores the fit and adds ``--batch``
grids chosen from that fit by the strategy (``inference.design``: ``info``
scores ``--candidates`` random grids by their expected information gain for
a new worker from the crowd; ``random`` draws them uniformly). The simulation's
own crowd answers each new grid once (``cen_bayes.datasets.answer_grids``:
a worker drawn in proportion to their HITs in the simulation, the attribute
they sort by from their bias and the grid's salience, noise and slips as
in the simulation). Every fit is from scratch (no warm start), with one
fixed model (``--variant``, ``--K``), so the strategies differ in their
data alone.

Every fit is scored on the same held-out grids, 15 % of the simulation's
grids held out whole (``cen_bayes.splits.split_by_grid``): held-out
accuracy and NLL, and attribute retrieval (each HIT's most probable dim
against the attribute it used, over every HIT of the fit, as the CLI
reports it). Rows (one per fit) go to ``active.csv`` as each sequence
ends, with the code version; ``active.md`` compares the strategies at each
number of training HITs, paired by seed; ``active.png`` draws the curves.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.runner import add_run_arguments, code_line, code_version, machine  # noqa: E402
from cen_bayes.atomic import atomic_path, write_csv, write_text  # noqa: E402

STRATEGIES = ("info", "random")
KEYS = ("dataset", "seed", "strategy")
METRICS = (("accuracy", "held-out accuracy"), ("nll", "held-out NLL"), ("retrieval", "attribute retrieval"))


@dataclass(frozen=True)
class Sequence:
    """One active-learning run: a dataset and seed, a strategy, and how it is run."""

    dataset: str
    seed: int
    strategy: str
    rounds: int = 10
    batch: int = 25
    start_frac: float = 0.1
    variant: str = "choice"
    K: int = 4
    steps: int | None = None  # None: the fit's default (500)
    draws: int = 100
    candidates: int = 10_000
    n_grids: int | None = None  # None: the dataset's own; fewer for the smoke run
    device: str = "cpu"
    threads: int = 1


def run_sequence(seq: Sequence) -> list[dict]:
    """Fit, score and extend ``seq.rounds`` times (and fit once more at the end); one row per fit."""
    import torch

    from cen_bayes.crowd import CrowdData
    from cen_bayes.datasets import answer_grids, load_dataset
    from cen_bayes.splits import Split, split_by_grid
    from inference.design import design
    from inference.evaluate import fit_and_evaluate

    torch.set_num_threads(seq.threads)
    sim = load_dataset(seq.dataset, seed=seq.seed, **({"n_grids": seq.n_grids} if seq.n_grids else {}))
    everything = CrowdData.from_source(sim.table)
    held = split_by_grid(everything, 0.15, seed=seq.seed).test_hits
    test_grids = set(everything.hits.grid_id[held])
    pool = np.array(sorted(set(everything.hits.grid_id) - test_grids), dtype=object)
    rng = np.random.default_rng(seq.seed)
    start = set(rng.choice(pool, max(1, round(seq.start_frac * everything.n_grids)), replace=False))
    table = sim.table[sim.table.grid_id.isin(start | test_grids)]
    truth = sim.hits
    rows = []
    for step in range(seq.rounds + 1):
        data = CrowdData.from_source(table)
        test = data.hits.grid_id.isin(test_grids).to_numpy()
        known = dataclasses.replace(sim, hits=truth)  # the designed HITs' truth too, for attribute retrieval
        result = fit_and_evaluate(data, Split(~test, test), known, variant=seq.variant, K=seq.K, steps=seq.steps,
                                  draws=seq.draws, seed=seq.seed, device=seq.device, progress=False, psis_draws=0)
        metrics = result.metrics
        row = {**asdict(seq), "round": step, "n_train_hits": metrics["n_train_hits"],
               "n_designed_hits": len(truth) - len(sim.hits), **{k: metrics["heldout"][k] for k in ("accuracy", "nll",
                                                                                                  "ece")},
               "retrieval": metrics.get("attribute_retrieval", {}).get("mean_accuracy", np.nan),
               "fit_seconds": metrics["fit_seconds"], "design_seconds": np.nan}
        rows.append(row)
        print(f"{seq.dataset} seed {seq.seed} {seq.strategy:6s} round {step:2d}: {row['n_train_hits']} HITs, "
              f"acc {row['accuracy']:.3f} nll {row['nll']:.3f} retrieval {row['retrieval']:.3f} "
              f"fit {row['fit_seconds']:.1f}s", file=sys.stderr, flush=True)
        if step == seq.rounds:
            break
        seed = seq.seed * 1000 + step
        started = time.perf_counter()
        chosen = design(result.cen, seq.batch, seq.strategy, grid_size=sim.spec.grid_size,
                        candidates=seq.candidates, seed=seed)
        row["design_seconds"] = time.perf_counter() - started
        ids = [f"active-{step:02d}-{k:02d}" for k in range(seq.batch)]
        answers, answered = answer_grids(sim, chosen.grids, seed=seed, grid_ids=ids)
        table = pd.concat([table, answers], ignore_index=True)
        truth = pd.concat([truth, answered], ignore_index=True)
    return rows


def run(sequences: list[Sequence], csv: Path, n_jobs: int, resume: bool) -> pd.DataFrame:
    """Run the sequences in ``n_jobs`` processes, appending each one's rows to ``csv`` as it ends;
    ``resume`` keeps the rows already there and skips their sequences."""
    done = pd.read_csv(csv) if resume and csv.exists() else pd.DataFrame()
    rows = done.to_dict("records")
    finished = {tuple(r[k] for k in KEYS) for r in rows}
    todo = [s for s in sequences if (s.dataset, s.seed, s.strategy) not in finished]
    if len(todo) < len(sequences):
        print(f"resuming: {len(sequences) - len(todo)} of {len(sequences)} sequences already in {csv}", flush=True)
    version = code_version()
    csv.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n_jobs, mp_context=context) as workers:
        futures = {workers.submit(run_sequence, s): s for s in todo}
        for n, future in enumerate(as_completed(futures), 1):
            rows += [{**row, "code": version} for row in future.result()]
            write_csv(pd.DataFrame(rows), csv, float_format="%.5g")  # a kill keeps the sequences so far
            s = futures[future]
            print(f"[{n}/{len(todo)}] {s.dataset} seed {s.seed} {s.strategy} done", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds of each metric, per dataset, strategy and round (and its training HITs)."""
    grouped = frame.groupby(["dataset", "strategy", "round"])
    stats = grouped[[m for m, _ in METRICS]].agg(["mean", "std"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    return stats.assign(n_train_hits=grouped.n_train_hits.mean(), seeds=grouped.seed.nunique()).reset_index()


def paired(frame: pd.DataFrame) -> pd.DataFrame:
    """info minus random per dataset, round and seed (accuracy and retrieval: > 0 is info better; NLL: < 0)."""
    keys = ["dataset", "round", "seed"]
    wide = frame.pivot_table(index=keys, columns="strategy", values=[m for m, _ in METRICS])
    out = pd.DataFrame(index=wide.index)
    for metric, _ in METRICS:
        if ("info" in wide[metric]) and ("random" in wide[metric]):
            out[metric] = wide[metric]["info"] - wide[metric]["random"]
    return out.reset_index()


def cell(values: pd.Series, digits: int = 3) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    return f"{values.mean():.{digits}f}" + (f" ± {values.std():.{digits}f}" if len(values) > 1 else "")


def table(frame: pd.DataFrame, dataset: str) -> str:
    """Round by round: training HITs, each strategy's scores (mean ± sd over seeds), info − random."""
    part = frame[frame.dataset == dataset]
    diff = paired(part)
    rows = []
    for step, at in part.groupby("round"):
        row = {"round": step, "training HITs": f"{at.n_train_hits.mean():.0f}"}
        for strategy in [s for s in STRATEGIES if s in set(at.strategy)]:
            mine = at[at.strategy == strategy]
            row.update({f"{strategy} acc": cell(mine.accuracy), f"{strategy} NLL": cell(mine.nll),
                        f"{strategy} retrieval": cell(mine.retrieval)})
        gap = diff[diff["round"] == step]
        for metric, label in (("accuracy", "Δ acc"), ("nll", "Δ NLL"), ("retrieval", "Δ retrieval")):
            if metric in gap:
                row[label] = cell(gap[metric])
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def plot(frame: pd.DataFrame, path: Path) -> None:
    stats = curves(frame)
    datasets = list(dict.fromkeys(frame.dataset))
    fig, axes = plt.subplots(len(datasets), len(METRICS), figsize=(4.2 * len(METRICS), 3.3 * len(datasets)),
                             squeeze=False)
    for row, dataset in zip(axes, datasets):
        for ax, (metric, label) in zip(row, METRICS):
            for strategy, part in stats[stats.dataset == dataset].groupby("strategy"):
                mean, sd = part[f"{metric}_mean"], part[f"{metric}_std"].fillna(0.0)
                ax.plot(part.n_train_hits, mean, marker="o", ms=3, label=strategy)
                ax.fill_between(part.n_train_hits, mean - sd, mean + sd, alpha=0.2)
            ax.set_title(f"{dataset}: {label}")
            ax.set_xlabel("training HITs")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, format="png", dpi=110)
    plt.close(fig)


def report(frame: pd.DataFrame, jobs: int) -> str:
    first = frame.iloc[0]
    seconds = (frame.fit_seconds + frame.design_seconds.fillna(0.0)).groupby([frame[k] for k in KEYS]).sum()
    lines = ["# Choosing grids by expected information gain (`python -m benchmarks.active`)", "",
             f"{machine()}, {code_line(frame)}, {jobs} processes with 1 torch thread each; seeds "
             f"{sorted(frame.seed.unique().tolist())}; {len(frame)} fits. Each sequence starts from the HITs of "
             f"{first.start_frac:.0%} of the simulation's grids and adds {first.batch} grids a round, chosen by the "
             f"strategy from the fit so far (`info`: the best of {first.candidates:,} random grids by expected "
             "information gain for a new worker from the crowd; `random`: uniform), each answered once by the "
             f"simulated crowd; every fit {first.variant} K = {first.K}, "
             f"{'500' if pd.isna(first.steps) else int(first.steps)} steps, from scratch; scored on the same "
             "15 % of grids held out whole. Mean ± sd over seeds; Δ = info − random, paired by seed (accuracy, "
             "retrieval: > 0 favours info; NLL: < 0 favours info). A sequence's fits and designs took "
             f"{seconds.mean():.0f} s on average (min {seconds.min():.0f}, max {seconds.max():.0f}). Per-fit rows in "
             "`active.csv`.", "", "![learning curves](active.png)", ""]
    for dataset in dict.fromkeys(frame.dataset):
        lines += [f"## {dataset}", "", table(frame, dataset), ""]
    return "\n".join(lines)


QUICK = {"datasets": ["retina"], "seeds": [0], "rounds": 3}
SMOKE = {"datasets": ["tiny"], "seeds": [0], "rounds": 2, "batch": 4, "steps": 20, "draws": 8, "candidates": 200,
         "n_grids": 60}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.active", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["retina", "celeba"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=10, help="rounds of new grids after the first fit (default 10)")
    parser.add_argument("--batch", type=int, default=25, help="grids added a round (default 25)")
    parser.add_argument("--start-frac", type=float, default=0.1, help="share of the grids to start from (0.1)")
    parser.add_argument("--variant", default="choice")
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="SVI steps per fit (default 500)")
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true",
                        help="retina, seed 0, 3 rounds at the full settings: its time scales to the full run")
    parser.add_argument("--report-only", action="store_true", help="fit nothing: redraw from OUT/active.csv")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    csv = out / "active.csv"
    if args.report_only:
        frame = pd.read_csv(csv)
    else:
        settings = {**vars(args), **(QUICK if args.quick else {}), **(SMOKE if args.smoke else {})}
        sequences = [Sequence(dataset, seed, strategy, rounds=settings["rounds"], batch=settings["batch"],
                              start_frac=settings["start_frac"], variant=settings["variant"], K=settings["K"],
                              steps=settings["steps"], draws=settings["draws"], candidates=settings["candidates"],
                              n_grids=settings.get("n_grids"), device=args.device)
                     for dataset in settings["datasets"] for seed in settings["seeds"]
                     for strategy in settings["strategies"]]
        started = time.perf_counter()
        frame = run(sequences, csv, args.jobs, args.resume)
        print(f"{len(sequences)} sequences in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    plot(frame, out / "active.png")
    write_text(out / "active.md", report(frame, args.jobs))
    print(f"wrote {out}/active.{{csv,md,png}}")


if __name__ == "__main__":
    main()
