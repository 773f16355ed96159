"""Does the fit know when to doubt itself? k-hat and the noisy-HIT flag on simulated crowds.

    python -m benchmarks.diagnostics                 # retina, celeba, birds; choice, mixture; seeds 0 1
    python -m benchmarks.diagnostics --smoke --out /tmp/x

For each dataset and seed (15 % of grids held out, the CLI's defaults, the
paper's K) the Bayesian CEN is fitted and scored on:

* ``psis_khat``: the PSIS k-hat of the guide (``inference.diagnostics``);
* the ``uncertain`` flag (``inference.hit_uncertainty``) against the
  simulator's noisy HITs: precision, recall, and the share flagged within
  each noise kind, among clean HITs that mix two attributes, and among clean
  one-group HITs (which look exactly like one-group noise);
* its two rules on their own: P(no single attribute explains the HIT) > 0.5
  (``unexplained_rule``) and entropy > log 2 (``entropy_rule``);
* ``off_list_on_spare_dim``: share of off-list noisy HITs whose most probable
  dim is matched to no listed attribute, i.e. the model gave the hidden
  attribute a dimension of its own rather than calling the HIT noise.

Writes ``benchmarks/results/diagnostics.csv`` and ``diagnostics.md``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from benchmarks.runner import PAPER_K, RESULTS, machine, write_results
from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from cen_bayes.metrics import noisy_hit_recovery
from cen_bayes.splits import split_by_grid
from inference.evaluate import fit_and_evaluate
from inference.hit_uncertainty import HIGH_ENTROPY, UNCERTAIN_ABOVE


def share(flags: np.ndarray, where: np.ndarray) -> float:
    """Share of ``flags`` among the HITs ``where`` selects; NaN when it selects none."""
    return float(flags[where].mean()) if where.any() else float("nan")


def run_dataset(name: str, seed: int, variant: str, smoke: bool, device: str) -> dict:
    sim = load_dataset(name, seed=seed, **({"n_grids": 60} if smoke else {}))
    data = CrowdData.from_source(sim.table, name=f"simulated {name}")
    split = split_by_grid(data, 0.15, seed=seed)
    K = PAPER_K.get(name, 10)
    result = fit_and_evaluate(data, split, sim, variant=variant, K=K, steps=20 if smoke else None,
                              draws=10 if smoke else 100, psis_draws=50 if smoke else 200, seed=seed,
                              device=device, progress=False)
    m, flags = result.metrics, result.hit_uncertainty
    truth = data.hits[["worker_id", "grid_id"]].astype(str).merge(
        sim.hits.astype({"worker_id": str, "grid_id": str}), on=["worker_id", "grid_id"], how="left")
    clean = (truth["noise"] == "none").to_numpy()
    rules = {"unexplained_rule": flags["p_unexplained"] > UNCERTAIN_ABOVE, "entropy_rule": flags["entropy"] > HIGH_ENTROPY}
    by_rule = {name: noisy_hit_recovery(flag, truth["noise"]) for name, flag in rules.items()}
    matched = set(m["attribute_retrieval"]["assignment"].values())
    off_list = (truth["noise"] == "off_list").to_numpy()
    on_spare = ~np.isin(result.p_attr[:, :K].argmax(1), list(matched))
    noisy = m["noisy_hits"]
    kinds = noisy["flagged_share_by_kind"]
    return {"dataset": name, "seed": seed, "variant": variant, "K": K, "psis_khat": m["diagnostics"]["psis_khat"],
            "uncertain_share": noisy["flagged_share"], "noisy_share": noisy["noisy_share"],
            "precision": noisy["precision"], "recall": noisy["recall"],
            **{f"flagged_{kind}": kinds.get(kind, np.nan) for kind in ("none", "off_list", "one_group", "random")},
            "flagged_clean_mixed": share(flags["uncertain"], clean & truth["attribute2"].notna().to_numpy()),
            "flagged_clean_one_group": share(flags["uncertain"], clean & (truth["n_groups"] == 1).to_numpy()),
            **{f"{name}_{key}": score[key] for name, score in by_rule.items()
               for key in ("flagged_share", "precision", "recall")},
            "off_list_on_spare_dim": share(on_spare, off_list),
            "heldout_accuracy": m["heldout"]["accuracy"]}


def summary(frame: pd.DataFrame, seconds: float) -> str:
    mean = frame.groupby(["dataset", "variant"], sort=False).mean(numeric_only=True).drop(columns="seed")
    lines = ["# Fit diagnostics and the noisy-HIT flag", "",
             f"`python -m benchmarks.diagnostics --seeds {' '.join(map(str, sorted(frame.seed.unique())))}` "
             f"({seconds:.0f} s, {machine()}, "
             f"{torch.get_num_threads()} threads). Means over seeds; per-seed rows in `diagnostics.csv`.", "",
             "`uncertain` = P(no single attribute dim explains the HIT) > 0.5. Precision/recall are against the "
             "simulator's noisy HITs; `noisy_share` is the precision of a random flag. `flagged_<kind>` is the "
             "share flagged within each kind of HIT.", "",
             mean.T.to_markdown(floatfmt=".3f"), "", "## Reading", ""]
    khats = frame.groupby(["dataset", "variant"], sort=False)["psis_khat"].apply(list)
    for (dataset, variant), m in mean.iterrows():
        lines.append(f"- {dataset} ({variant}, K = {m['K']:.0f}): k-hat per seed "
                     f"{', '.join(f'{k:.2f}' for k in khats[dataset, variant])}; uncertain flag precision "
                     f"{m['precision']:.2f} ({m['precision'] / m['noisy_share']:.1f}× the {m['noisy_share']:.2f} of a "
                     f"random flag), recall {m['recall']:.2f} (p_unexplained > 0.5 alone: "
                     f"{m['unexplained_rule_precision']:.2f} / {m['unexplained_rule_recall']:.2f}; entropy > log 2 "
                     f"alone: {m['entropy_rule_precision']:.2f} / {m['entropy_rule_recall']:.2f}).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.diagnostics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["retina", "celeba", "birds"])
    parser.add_argument("--variants", nargs="+", default=["choice", "mixture"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and few steps: checks the script runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS), help="folder for diagnostics.csv and diagnostics.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = [run_dataset(name, seed, variant, args.smoke, args.device)
            for seed in args.seeds for name in args.datasets for variant in args.variants]
    frame = pd.DataFrame(rows)
    write_results(frame, summary(frame, time.perf_counter() - start), args.out, "diagnostics")


if __name__ == "__main__":
    main()
