"""How far the default is from the Bayes-optimal limit, and whether more data closes the gap.

    python -m benchmarks.limit_gap                          # retina, celeba, categories; x1, 2, 4 grids; 3 seeds
    python -m benchmarks.limit_gap --datasets retina --grids 1 4 --seeds 0
    python -m benchmarks.limit_gap --smoke --out /tmp/x     # tiny sizes (what the tests run)
    python -m benchmarks.limit_gap --report-only

The ``limit`` of a simulated crowd (``cen_bayes.limit``) scores each held-out
pair with the true process's P(same): it knows every image's latents, every
worker's propensities and every grid's salience. A model fitted to a finite
crowd must estimate all of that, so part of its distance to the limit is
estimation error, which more HITs shrink, and the rest is what the model
cannot represent, which they do not. This benchmark separates the two: each
dataset is simulated again with 2 and 4 times its grids (same images and
workers, so each image and worker is seen in more HITs), 15 % of the grids
held out whole as everywhere, and the default (``cen-auto``), ``cen-choice``
and the limit are scored on the same held-out pairs. A gap that falls
steadily with the number of training HITs is data-limited; a gap that
levels off is the model's.

Gaps are paired per seed (limit minus method on the same split), then
averaged: the limit's own seed-to-seed spread (different held-out grids)
does not enter them. Writes ``limit_gap.{csv,md,png}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cen_bayes.atomic import atomic_path, write_text  # noqa: E402
from benchmarks.runner import Job, add_run_arguments, code_line, machine, run_jobs  # noqa: E402

METHODS = ("cen-auto", "cen-choice")
GRIDS = (1.0, 2.0, 4.0)


def gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset, grid multiple, seed and fitted method: its scores and their distance to the
    limit on the same split (accuracy: limit minus method; NLL: method minus limit; both >= 0 when the
    limit is better)."""
    keys = ["dataset", "grids", "seed"]
    limit = frame.loc[frame.method == "limit", [*keys, "accuracy", "nll"]]
    fitted = frame[frame.method != "limit"].merge(limit, on=keys, suffixes=("", "_limit"))
    return fitted.assign(acc_gap=fitted.accuracy_limit - fitted.accuracy, nll_gap=fitted.nll - fitted.nll_limit)


def table(gap: pd.DataFrame) -> str:
    """Dataset x grid multiple x method: training HITs, limit and method accuracy, gaps (mean ± sd)."""
    def cell(values, digits=3):
        return f"{values.mean():.{digits}f}" + (f" ± {values.std():.{digits}f}" if len(values) > 1 else "")

    rows = []
    for (dataset, grids, method), part in gap.groupby(["dataset", "grids", "method"], sort=True):
        rows.append({"dataset": dataset, "× grids": f"{grids:g}", "training HITs": f"{part.n_train_hits.mean():.0f}",
                     "method": method, "seeds": len(part), "limit acc": cell(part.accuracy_limit),
                     "acc": cell(part.accuracy), "acc gap": cell(part.acc_gap),
                     "NLL gap": cell(part.nll_gap), "chosen": ", ".join(sorted(set(part.chosen.fillna("")) - {""}))})
    return pd.DataFrame(rows).to_markdown(index=False)


def plot(gap: pd.DataFrame, path: Path) -> None:
    datasets = sorted(gap.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for method, part in gap[gap.dataset == dataset].groupby("method"):
            curve = part.groupby("n_train_hits_mean").acc_gap.agg(["mean", "std"]).fillna(0)
            ax.errorbar(curve.index, curve["mean"], yerr=curve["std"], marker="o", capsize=3, label=method)
        ax.axhline(0.015, color="grey", ls=":", lw=1, label="1.5 points")
        ax.set_xscale("log")
        ax.set_title(dataset)
        ax.set_xlabel("training HITs")
        ax.set_ylabel("limit − method, held-out accuracy")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def report(frame: pd.DataFrame, jobs: int) -> str:
    gap = gaps(frame)
    return "\n".join([
        "# Distance to the Bayes-optimal limit as the crowd grows (`python -m benchmarks.limit_gap`)", "",
        f"{machine()}, {code_line(frame)}, {jobs} processes with 1 torch thread each; "
        f"seeds {sorted(frame.seed.unique().tolist())}; {len(frame)} rows. Each dataset simulated with "
        "`× grids` times its grids (same images and workers); 15 % of grids held out whole; gaps paired per "
        "seed, mean ± sd over seeds; `acc gap` = limit − method accuracy, `NLL gap` = method − limit NLL; "
        "`chosen` = what the automatic choice picked. Per-fit rows in `limit_gap.csv`.", "",
        "![gap to the limit](limit_gap.png)", "", table(gap), ""])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limit_gap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["retina", "celeba", "categories"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--grids", nargs="+", type=float, default=list(GRIDS),
                        help="multiples of each dataset's number of grids")
    parser.add_argument("--report-only", action="store_true", help="fit nothing: redraw from OUT/limit_gap.csv")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        frame = pd.read_csv(out / "limit_gap.csv")
    else:
        # biggest crowds first, so the long fits do not all land at the end of the run
        jobs = [Job(dataset, seed, method, smoke=args.smoke, device=args.device, grids=grids)
                for grids in sorted(args.grids, reverse=True) for seed in args.seeds for dataset in args.datasets
                for method in ("limit", *args.methods)]
        frame = run_jobs(jobs, out / "limit_gap.csv", args.jobs, resume=args.resume)
    gap = gaps(frame)
    gap["n_train_hits_mean"] = gap.groupby(["dataset", "grids"]).n_train_hits.transform("mean")
    plot(gap, out / "limit_gap.png")
    write_text(out / "limit_gap.md", report(frame, args.jobs))
    print(f"wrote {out}/limit_gap.{{csv,md,png}}")


if __name__ == "__main__":
    main()
