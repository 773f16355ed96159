"""Every method on the same data, the same split, scored the same way (paper §4.5, Fig. 9).

    python -m benchmarks.methods                          # retina, seed 0, every method
    python -m benchmarks.methods --datasets retina celeba --seeds 0 1
    python -m benchmarks.methods --smoke --out /tmp/x     # tiny sizes (what the tests run)

For each simulated dataset and seed: 15 % of grids held out whole; each
method of ``models.methods.METHODS`` fitted with its defaults at the paper's
K (``cen``: the Bayesian CEN, choice variant; the rest through
``inference.evaluate.evaluate_method``). Rows: held-out accuracy, NLL, ECE,
attribute retrieval where a method names attributes, clustering MCC
(K-means) of its embedding against the image classes, and fit seconds.

Writes ``benchmarks/results/methods.csv`` and ``methods.md``.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pandas as pd
import torch

from benchmarks.cen_fit import PAPER_K, RESULTS, write_results
from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from cen_bayes.splits import split_by_grid
from inference.evaluate import evaluate_method, fit_and_evaluate
from models.methods import METHODS, make_method


def run_dataset(name: str, seed: int, methods: list[str], smoke: bool, device: str) -> list[dict]:
    sim = load_dataset(name, seed=seed, **({"n_grids": 60} if smoke else {}))
    data = CrowdData.from_source(sim.table, name=f"simulated {name}")
    split = split_by_grid(data, 0.15, seed=seed)
    K = PAPER_K.get(name, 10)
    rows = []
    for method in methods:
        if method == "cen":
            result = fit_and_evaluate(data, split, sim, K=K, steps=20 if smoke else None, draws=10 if smoke else 100,
                                      psis_draws=25 if smoke else 200, seed=seed, device=device, progress=False)
        else:
            quick = ({"steps": 20} if method == "bcc" else {"epochs": 1}) if smoke else {}
            result = evaluate_method(make_method(method, data, sim, K=K, seed=seed, device=device, progress=False,
                                                 **quick), data, split, sim, seed=seed)
        m = result.metrics
        rows.append({"dataset": name, "seed": seed, "method": method, "K": K,
                     "accuracy": m["heldout"]["accuracy"], "nll": m["heldout"]["nll"], "ece": m["heldout"]["ece"],
                     "majority_accuracy": m["heldout"]["majority_accuracy"],
                     "retrieval_mean": m.get("attribute_retrieval", {}).get("mean_accuracy", np.nan),
                     "kmeans_mcc": m["clustering"]["kmeans"]["mcc"], "dpgmm_mcc": m["clustering"]["dpgmm"]["mcc"],
                     "fit_seconds": m["fit_seconds"]})
        print(f"{name} seed {seed} {method:13s} acc {rows[-1]['accuracy']:.3f} fit {rows[-1]['fit_seconds']:.1f}s",
              flush=True)
    return rows


def summary(frame: pd.DataFrame, seconds: float) -> str:
    mean = frame.groupby(["dataset", "method"], sort=False).mean(numeric_only=True).drop(columns=["seed", "K"])
    lines = ["# Every method on the same split (`python -m benchmarks.methods`)", "",
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
             f"torch {torch.__version__}; seeds {sorted(frame.seed.unique().tolist())}; whole run {seconds:.0f} s. "
             "Means over seeds; per-seed rows in `methods.csv`. `csn` is an oracle (given each HIT's true "
             "attribute); retrieval is blank for attribute-blind methods.", ""]
    for dataset, part in mean.groupby(level=0, sort=False):
        lines += [f"## {dataset} (K = {frame[frame.dataset == dataset].K.iloc[0]})", "",
                  part.droplevel(0).sort_values("accuracy", ascending=False).to_markdown(floatfmt=".3f"), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.methods", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["retina"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and few steps: checks the script runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS), help="folder for methods.csv and methods.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = [row for seed in args.seeds for name in args.datasets
            for row in run_dataset(name, seed, args.methods, args.smoke, args.device)]
    frame = pd.DataFrame(rows)
    write_results(frame, summary(frame, time.perf_counter() - start), args.out, "methods")


if __name__ == "__main__":
    main()
