"""Fit time and peak memory of every method at retina and birds scale, and clustering of the
birds embeddings (supplement F), from the same fits.

    python -m benchmarks.scale                       # retina + birds, seed 0, one fit at a time
    python -m benchmarks.scale --datasets retina --methods cen-choice paper-cen
    python -m benchmarks.scale --smoke --out /tmp/x  # tiny sizes (what the tests run)

Each fit runs alone in a fresh process with every torch thread of the
machine, so its fit seconds are not shared with another fit and its peak
resident memory (``ru_maxrss``: torch, the data and the fit) is its own;
``fit_rss_growth_mb`` is how much the peak rose during the fit. Speed is
reported as the ratio to the paper's recipe (``paper-cen``: point-estimate
CEN, Adam, batch 100, 20 epochs) measured in the same run. With
``--device cuda`` the CUDA peak is recorded too.

The birds fits' image embeddings are then clustered like the paper's §F:
K-means with 16 clusters and a Dirichlet-process Gaussian mixture, scored
against the 16 species by multiclass MCC, NMI and matched F1.

Writes ``speed.{csv,md}`` and ``clustering.md``.

**Schedules** (``--schedules``): the default minibatch schedule of large
crowds (``inference.fit.default_batch_hits``) at three step sizes against
full-batch fits, on birds and birds-like crowds of 1 M and 10 M pairs.
Writes ``scale_schedule.{csv,md}``.

**Crowd size** (``--pairs``): the CLI itself (``python -m inference.svi``, as
a user runs it, ``--variant choice --K 4``, its other defaults) on simulated
birds-like crowds of about that many pairs (grids of 24; images, workers and
grids grown together up to the 5,000 images and 2,000 workers of a 36,000-grid
campaign; ``--auto``: the CLI's own choice of variant and K, all its defaults),
in 1 process or under ``torchrun`` with N processes (``--processes``),
the machine's threads split between them. Each run is timed from the outside
and its peak resident memory read as the largest of its processes'
(``RUSAGE_CHILDREN`` of a wrapper that runs only it). Writes
``scale_pairs.{csv,md,png}``: fit seconds, seconds per epoch (a pass over the
training HITs), whole-run seconds, peak RSS and held-out accuracy against
pairs, log-log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import pandas as pd
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cen_bayes.atomic import atomic_path, write_csv, write_text  # noqa: E402
from benchmarks.runner import (ALL_METHODS, Job, add_run_arguments, code_line, code_version,  # noqa: E402
                               machine, run_jobs)

RECIPE = "paper-cen"


def speed_report(frame: pd.DataFrame, threads: int) -> str:
    lines = ["# Fit time and memory (`python -m benchmarks.scale`)", "",
             f"{machine()}, {code_line(frame)}, {threads} torch threads, "
             f"device {frame.device.iloc[0]}; seed {sorted(frame.seed.unique().tolist())}; one fit at a time, each "
             f"in a fresh process. `× recipe` = fit seconds / fit seconds of `{RECIPE}` (the paper's recipe) in "
             "this run: below 1 is faster. Peak RSS is the whole process (Python, torch, data, fit); growth is "
             "the rise during the fit. Fit seconds exclude prediction and scoring.", ""]
    for dataset in frame.dataset.unique():
        part = frame[frame.dataset == dataset].set_index("method")
        recipe = part.fit_seconds.get(RECIPE)
        table = pd.DataFrame({
            "fit s": part.fit_seconds.map("{:.1f}".format),
            "× recipe": (part.fit_seconds / recipe).map("{:.2f}".format) if recipe else "",
            "peak RSS MB": part.peak_rss_mb.map("{:.0f}".format),
            "growth MB": part.fit_rss_growth_mb.map("{:.0f}".format),
            "held-out acc": part.accuracy.map("{:.3f}".format)}).sort_values("fit s", key=lambda s: s.astype(float))
        if part.cuda_peak_mb.notna().any():
            table["CUDA peak MB"] = part.cuda_peak_mb.map("{:.0f}".format)
        lines += [f"## {dataset} ({part.n_train_pairs.iloc[0]:,} training pairs, K = {part.K.iloc[0]})", "",
                  table.to_markdown(disable_numparse=True), ""]
    return "\n".join(lines)


def clustering_report(frame: pd.DataFrame, dataset: str) -> str:
    part = frame[frame.dataset == dataset].set_index("method")
    if part.empty:
        return f"No {dataset} fits in this run.\n"
    cols = [f"{how}_{score}" for how in ("kmeans", "dpgmm") for score in ("mcc", "nmi", "f1")]
    table = part[cols].sort_values("kmeans_mcc", ascending=False)
    table.columns = [c.replace("_", " ").replace("kmeans", "K-means").replace("dpgmm", "DP mixture")
                     .replace("mcc", "MCC").replace("nmi", "NMI").replace("f1", "F1") for c in cols]
    return "\n".join([
        f"# Clustering the {dataset} embedding (paper supplement F; `python -m benchmarks.scale`)", "",
        f"The image embedding (Bayesian: posterior mean) of each method's full-data fit in `speed.csv` "
        f"(seed {sorted(part.seed.unique().tolist())}, K = {part.K.iloc[0]}), clustered by K-means with as many "
        "clusters as species and by a Dirichlet-process Gaussian mixture (scikit-learn's "
        "BayesianGaussianMixture, truncated at that many components), scored against the species: multiclass "
        "MCC (the paper's eq. 9; it reports 0.914 for its CEN on real BIRDS), NMI, and F1 after Hungarian "
        "matching of clusters to species.", "", table.to_markdown(floatfmt=".3f"), ""])


PAIRS_PER_GRID = 276  # a grid of 24 images sorted once


def sized_crowd(n_pairs: float, seed: int = 0):
    """A simulated birds-like crowd of about ``n_pairs`` pairs: grids grow with the pairs, images and
    workers with them up to a 36,000-grid campaign's 5,000 images and 2,000 workers."""
    from cen_bayes.datasets import load_dataset

    n_grids = max(int(round(n_pairs / PAIRS_PER_GRID)), 40)
    n_images = int(min(max(n_grids / 7.2, 300), 5000))
    n_workers = int(min(max(n_grids / 18, 60), 2000))
    return load_dataset("birds", seed=seed, n_grids=n_grids, n_images=n_images, n_workers=n_workers,
                        min_hits_per_worker=min(8, n_grids // n_workers))


# A wrapper that runs only its arguments, so its children's peak RSS is theirs alone (KiB on Linux).
_PEAK = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


FIXED_MODEL = ["--variant", "choice", "--K", "4"]  # the sweep's model unless --auto: the CLI's own choice


def run_cli(table: Path, out: Path, processes: int, threads: int, seed: int, extra: list[str],
            auto: bool = False) -> dict:
    """One CLI run on ``table``: its metrics.json and outside timings and peak memory."""
    cli = ["-m", "inference.svi", "--data", str(table), *([] if auto else FIXED_MODEL), "--seed", str(seed),
           "--no-figures", "--no-progress", "--out", str(out), *extra]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(processes), *cli]
    else:
        command = [sys.executable, *cli]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(threads // processes, 1))}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, *command], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the CLI failed on {table} with {processes} process(es):\n{done.stderr[-2000:]}")
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    return {"wall_seconds": time.perf_counter() - started, "peak_rss_mb": peak_kib / 1024,
            "metrics": json.loads((out / "metrics.json").read_text())}


def pairs_sweep(sizes: list[float], processes: list[int], seed: int, threads: int, out: Path, extra: list[str],
                resume: bool = False, auto: bool = False, device: str = "cpu") -> pd.DataFrame:
    csv = out / "scale_pairs.csv"
    rows = pd.read_csv(csv).to_dict("records") if resume and csv.exists() else []
    model = "auto" if auto else "choice K 4"
    done = {(r["target_pairs"], r["processes"]) for r in rows
            if r.get("model", "choice K 4") == model and str(r.get("device", "cpu")).startswith(device)}
    version = code_version()
    with tempfile.TemporaryDirectory() as work:
        for size in sizes:
            if all((size, n) in done for n in processes):
                continue
            sim = sized_crowd(size, seed)
            table = Path(work) / f"crowd-{size:g}.parquet"
            sim.table.to_parquet(table, index=False)
            for n in processes:
                if (size, n) in done:
                    continue
                run = run_cli(table, Path(work) / f"run-{size:g}-{n}", n, threads, seed, ["--device", device, *extra],
                              auto)
                m = run["metrics"]
                epochs = m["steps"] * (m.get("batch_hits") or m["n_train_hits"]) / m["n_train_hits"]
                rows.append({"target_pairs": size, "pairs": sim.n_pairs, "images": sim.table.image_id.nunique(),
                             "workers": sim.table.worker_id.nunique(), "hits": len(sim.hits),
                             "n_train_hits": m["n_train_hits"], "processes": n, "threads": threads, "model": model,
                             "device": m["device"],
                             "chosen": f"{m['variant']} K {m['K']}", "batch_hits": m.get("batch_hits"),
                             "selection_seconds": m.get("selection_seconds", 0.0),
                             "steps": m["steps"], "epochs": epochs, "fit_seconds": m["fit_seconds"],
                             "seconds_per_epoch": m["fit_seconds"] / epochs, "wall_seconds": run["wall_seconds"],
                             "peak_rss_mb": run["peak_rss_mb"], "accuracy": m["heldout"]["accuracy"],
                             "nll": m["heldout"]["nll"], "code": version})
                write_csv(pd.DataFrame(rows), csv, float_format="%.5g")
                r = rows[-1]
                print(f"{r['pairs']:,} pairs, {n} process(es): fit {r['fit_seconds']:.1f} s, whole run "
                      f"{r['wall_seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, held-out accuracy "
                      f"{r['accuracy']:.3f}", flush=True)
    return pd.DataFrame(rows)


def sweep_report(frame: pd.DataFrame) -> str:
    table = frame.assign(**{
        "pairs": frame.pairs.map("{:,}".format), "fit s": frame.fit_seconds.map("{:.1f}".format),
        "s / epoch": frame.seconds_per_epoch.map("{:.2f}".format),
        "whole run s": frame.wall_seconds.map("{:.1f}".format),
        "peak RSS MB": frame.peak_rss_mb.map("{:.0f}".format), "held-out acc": frame.accuracy.map("{:.3f}".format),
        "batch HITs": frame.batch_hits.map(lambda b: "all" if pd.isna(b) else f"{int(b):,}"),
        "choosing s": frame.selection_seconds.map("{:.1f}".format)})
    cols = ["model", "chosen", "device", "pairs", "images", "workers", "hits", "processes", "batch HITs", "steps", "choosing s",
            "fit s", "s / epoch", "whole run s", "peak RSS MB", "held-out acc"]
    return "\n".join([
        "# The CLI on crowds of growing size (`python -m benchmarks.scale --pairs`)", "",
        f"{machine()}, {code_line(frame)}, {int(frame.threads.iloc[0])} threads split between the processes; "
        "`python -m inference.svi` with its defaults (`model` auto: the CLI chooses the variant and K, "
        "`choosing s` of the run; `choice K 4`: `--variant choice --K 4`) on simulated birds-like crowds "
        "(grids of 24); "
        "`torchrun --standalone --nproc-per-node N` for N > 1. Peak RSS is the largest process's; whole-run "
        "seconds include reading the table, prediction and every output file.", "",
        table[cols].to_markdown(index=False, disable_numparse=True), "", "![time and memory](scale_pairs.png)", ""])


def sweep_plot(frame: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for (model, device, n), part in frame.groupby(["model", "device", "processes"]):
        part, name = part.sort_values("pairs"), f"{model}, {device}, {n} process{'es' if n > 1 else ''}"
        axes[0].plot(part.pairs, part.fit_seconds, "o-", label=f"{name}: fit")
        axes[0].plot(part.pairs, part.wall_seconds, "s--", label=f"{name}: whole run", alpha=0.6)
        axes[1].plot(part.pairs, part.peak_rss_mb, "o-", label=name)
    for ax, label in zip(axes, ("seconds", "peak RSS per process, MB")):
        ax.set(xscale="log", yscale="log", xlabel="pairs", ylabel=label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, format="png", dpi=110)
    plt.close(fig)


# (crowd, K, [(batch: "full" or "default", steps, lr or None for the default)]): the schedules compared
SCHEDULES = [("birds", 10, [("full", 500, None), ("default", 500, 0.1), ("default", 500, None), ("default", 500, 0.3)]),
             (1e6, 4, [("full", 500, None), ("default", 500, 0.1), ("default", 500, None), ("default", 500, 0.3)]),
             (1e7, 4, [("full", 150, None), ("default", 500, 0.1), ("default", 500, None), ("default", 500, 0.3)])]


def schedule_sweep(seed: int, out: Path, smoke: bool = False) -> pd.DataFrame:
    """Full-batch fits against the default minibatch schedule (``inference.fit.default_batch_hits``) at three
    step sizes, ``--variant choice``, on birds and birds-like crowds of 1 M and 10 M pairs: held-out accuracy
    and NLL (20 posterior draws) and fit seconds. One fit at a time in this process."""
    from cen_bayes import CEN
    from cen_bayes.crowd import CrowdData
    from cen_bayes.datasets import load_dataset
    from cen_bayes.metrics import pair_scores
    from cen_bayes.splits import split_by_grid

    rows, version = [], code_version()
    out.mkdir(parents=True, exist_ok=True)
    schedules = [("tiny", 3, [("full", 20, None), ("default", 20, None)])] if smoke else SCHEDULES
    for crowd, K, runs in schedules:
        sim = load_dataset(crowd, seed=seed) if isinstance(crowd, str) else sized_crowd(crowd, seed)
        data = CrowdData.from_source(sim.table)
        split = split_by_grid(data, 0.15, seed=seed)
        test = data.pairs.subset(split.pair_masks(data)[1])
        n_train_hits = int(split.train_hits.sum())
        for batch, steps, lr in runs:
            cen = CEN(K, "choice", steps=steps, lr=lr, batch_hits=n_train_hits if batch == "full" else None,
                      draws=20, seed=seed, progress=False).fit(data, split)
            scores = pair_scores(test.label.numpy(), cen.predict_proba(data, test))
            fit = cen.fit_result_
            rows.append({"crowd": crowd if isinstance(crowd, str) else f"{len(data.pairs):,} pairs",
                         "pairs": len(data.pairs), "images": data.n_images, "n_train_hits": n_train_hits, "K": K,
                         "schedule": batch, "batch_hits": fit.batch_hits, "steps": fit.steps, "lr": fit.lr,
                         "epochs": fit.steps * (fit.batch_hits or n_train_hits) / n_train_hits,
                         "fit_seconds": fit.seconds, "accuracy": scores["accuracy"], "nll": scores["nll"],
                         "seed": seed, "code": version})
            write_csv(pd.DataFrame(rows), out / "scale_schedule.csv", float_format="%.5g")
            r = rows[-1]
            print(f"{r['crowd']}: {batch} batch ({r['batch_hits'] or 'all'} HITs) lr {r['lr']:g}, {steps} steps: "
                  f"fit {r['fit_seconds']:.1f} s, held-out accuracy {r['accuracy']:.4f}, NLL {r['nll']:.4f}", flush=True)
    return pd.DataFrame(rows)


def schedule_report(frame: pd.DataFrame) -> str:
    table = frame.assign(**{
        "batch HITs": frame.batch_hits.map(lambda b: "all" if pd.isna(b) else f"{int(b):,}"),
        "lr": frame.lr.map("{:g}".format), "epochs": frame.epochs.map("{:.0f}".format),
        "fit s": frame.fit_seconds.map("{:.1f}".format), "held-out acc": frame.accuracy.map("{:.4f}".format),
        "held-out NLL": frame.nll.map("{:.4f}".format)})
    cols = ["crowd", "images", "K", "schedule", "batch HITs", "lr", "steps", "epochs", "fit s", "held-out acc",
            "held-out NLL"]
    return "\n".join([
        "# Full batches against the default minibatch schedule (`python -m benchmarks.scale --schedules`)", "",
        f"{machine()}, {code_line(frame)}, one fit at a time; `--variant choice`, seed "
        f"{sorted(frame.seed.unique().tolist())}; `default`: `inference.fit.default_batch_hits` (enough HITs to "
        "show each image about 10 times per step) at Adam step sizes 0.1, 0.2 (the default) and 0.3; held-out "
        "scores from 20 posterior draws.", "", table[cols].to_markdown(index=False, disable_numparse=True), ""])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["retina", "birds"])
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--pairs", nargs="+", type=float,
                        help="instead of the methods: the CLI on simulated crowds of about this many pairs")
    parser.add_argument("--processes", nargs="+", type=int, default=[1], help="with --pairs: 1 process, or N "
                        "under torchrun (the threads split between them)")
    parser.add_argument("--auto", action="store_true", help="with --pairs: the CLI chooses the variant and K "
                        "(its default) instead of --variant choice --K 4")
    parser.add_argument("--cli", nargs=argparse.REMAINDER, default=[],
                        help="with --pairs: further CLI options for every run (last on the line)")
    parser.add_argument("--schedules", action="store_true", help="instead of the methods: full batches against "
                        "the default minibatch schedule on growing crowds (scale_schedule.{csv,md})")
    add_run_arguments(parser, jobs=False)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.schedules:
        frame = schedule_sweep(args.seed, out, args.smoke)
        write_text(out / "scale_schedule.md", schedule_report(frame))
        print(f"wrote {out}/scale_schedule.{{csv,md}}")
        return
    if args.pairs:
        sizes = [2e3] if args.smoke else args.pairs
        frame = pairs_sweep(sizes, args.processes, args.seed, args.threads, out, args.cli, args.resume, args.auto,
                            args.device)
        sweep_plot(frame, out / "scale_pairs.png")
        write_text(out / "scale_pairs.md", sweep_report(frame))
        print(f"wrote {out}/scale_pairs.{{csv,md,png}}")
        return
    datasets = ["tiny"] if args.smoke else args.datasets
    jobs = [Job(d, args.seed, m, smoke=args.smoke, device=args.device, threads=args.threads)
            for d in datasets for m in args.methods]
    frame = run_jobs(jobs, out / "speed.csv", n_jobs=1, fresh=True, resume=args.resume)
    write_text(out / "speed.md", speed_report(frame, args.threads))
    write_text(out / "clustering.md", clustering_report(frame, "tiny" if args.smoke else "birds"))
    print(f"wrote {out}/speed.{{csv,md}} and clustering.md")


if __name__ == "__main__":
    main()
