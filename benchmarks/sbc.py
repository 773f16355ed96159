"""Simulation-based calibration of the Bayesian CEN's SVI posterior (Talts et al. 2018; ``inference.sbc``).

    python -m benchmarks.sbc                          # 200 replicates, 2 processes
    python -m benchmarks.sbc --replicates 20 --out /tmp/x

Each replicate draws the ``worker`` variant's parameters from its prior,
simulates the labels of a small crowd (16 images, 4 workers, 8 grids of 6
images each sorted by 2 workers: 16 HITs, 240 pairs, K = 2), fits it with the
CLI's defaults and ranks the truth among 99 posterior draws. Writes
``sbc.csv`` (every rank), ``sbc.md`` (the uniformity table) and ``sbc.png``
(rank histograms against the band a uniform histogram stays in 99 % of the
time).
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.runner import RESULTS, machine  # noqa: E402
from cen_bayes.atomic import atomic_path, write_csv, write_text  # noqa: E402
from inference.sbc import QUANTITIES, calibration_summary, sbc_ranks  # noqa: E402

DRAWS, BINS = 99, 10


def _chunk(replicates: range, seed: int, steps: int | None) -> pd.DataFrame:
    import torch
    torch.set_num_threads(1)
    return sbc_ranks(replicates, draws=DRAWS, seed=seed, steps=steps, progress=False)


def run(n_replicates: int, n_jobs: int, seed: int, steps: int | None) -> pd.DataFrame:
    shares = [range(start, n_replicates, n_jobs) for start in range(n_jobs)]
    with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(functools.partial(_chunk, seed=seed, steps=steps), shares))
    return pd.concat(parts).sort_values(["replicate", "quantity", "element"], kind="stable")


def histogram_figure(ranks: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, len(QUANTITIES), figsize=(3.2 * len(QUANTITIES), 2.8), sharey=False)
    for ax, name in zip(axes, QUANTITIES):
        part = ranks[ranks.quantity == name]["rank"].to_numpy()
        counts = np.bincount(np.minimum(part * BINS // (DRAWS + 1), BINS - 1), minlength=BINS)
        low, high = stats.binom.interval(0.99, len(part), 1 / BINS)
        ax.axhspan(low, high, color="0.85")
        ax.axhline(len(part) / BINS, color="0.5", lw=0.8)
        ax.bar(np.arange(BINS), counts, width=0.9, color="C0")
        ax.set(title=name.replace("_", " "), xlabel="rank of truth (decile)", xticks=[])
    axes[0].set_ylabel("count")
    fig.suptitle("SBC rank histograms (grey: 99 % band of a uniform histogram)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, dpi=110)
    plt.close(fig)


def report(ranks: pd.DataFrame, summary: pd.DataFrame, args) -> str:
    table = summary.assign(chi2_p=summary.chi2_p.map("{:.2g}".format)).round(3).rename(columns={
        "chi2_p": "χ² p (element 0)", "coverage_90": "90 % interval coverage", "mean_rank": "mean rank / L"})
    return "\n".join([
        "# Simulation-based calibration (`python -m benchmarks.sbc`)", "",
        f"{machine()}; {args.replicates} replicates (seed {args.seed}), {DRAWS} posterior draws each, "
        f"{'the CLI default' if args.steps is None else args.steps} SVI steps. Model: the `worker` variant, "
        "K = 2, on 16 images, 4 workers and 8 grids of 6 images, each sorted by 2 workers (16 HITs, 240 "
        "pairs); every replicate draws τ, x, a^w and β from the prior, simulates the labels and fits them. "
        "Ranked quantities are invariant to the model's dim permutations and sign flips (`inference.sbc`).", "",
        "If the posterior were exact, every rank histogram would be flat, the χ² test would reject at the "
        "1 % level one time in 100, each 90 % interval would hold the truth 90 % of the time, and the mean "
        "rank would be 0.5. Coverage and mean rank pool every element (images, workers, HITs); the χ² test "
        "uses one element per replicate so its counts are independent.", "",
        table.to_markdown(), "", "![rank histograms](sbc.png)", ""])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sbc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--steps", type=int, default=None, help="SVI steps per fit (default: the CLI's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, one torch thread each")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ranks = run(args.replicates, args.jobs, args.seed, args.steps)
    summary = calibration_summary(ranks, DRAWS, BINS)
    write_csv(ranks, out / "sbc.csv")
    histogram_figure(ranks, out / "sbc.png")
    write_text(out / "sbc.md", report(ranks, summary, args))
    print(summary.to_string(float_format="{:.3f}".format))
    print(f"wrote {out / 'sbc.csv'}, {out / 'sbc.md'} and {out / 'sbc.png'}")


if __name__ == "__main__":
    main()
