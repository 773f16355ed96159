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
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from cen_bayes.atomic import write_text
from benchmarks.runner import ALL_METHODS, Job, add_run_arguments, code_line, machine, run_jobs

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["retina", "birds"])
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    add_run_arguments(parser, jobs=False)
    args = parser.parse_args(argv)
    out = Path(args.out)
    datasets = ["tiny"] if args.smoke else args.datasets
    jobs = [Job(d, args.seed, m, smoke=args.smoke, device=args.device, threads=args.threads)
            for d in datasets for m in args.methods]
    frame = run_jobs(jobs, out / "speed.csv", n_jobs=1, fresh=True, resume=args.resume)
    write_text(out / "speed.md", speed_report(frame, args.threads))
    write_text(out / "clustering.md", clustering_report(frame, "tiny" if args.smoke else "birds"))
    print(f"wrote {out}/speed.{{csv,md}} and clustering.md")


if __name__ == "__main__":
    main()
