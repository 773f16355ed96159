"""Held-out label prediction against the amount of training data (paper Fig. 9 and S3), and
attribute retrieval of every CEN variant (Fig. 4).

    python -m benchmarks.learning_curves                    # retina, celeba, birds; seeds 0-2; 2 processes
    python -m benchmarks.learning_curves --datasets birds --seeds 0 --fractions 1
    python -m benchmarks.learning_curves --smoke --out /tmp/x   # tiny sizes (what the tests run)
    python -m benchmarks.learning_curves --report-only          # redraw the reports from the CSV

For each dataset and seed: 15 % of grids held out whole; the training grids
cut to nested fractions; at each fraction every method of
``benchmarks.runner.ALL_METHODS`` (Bayesian CEN choice / mixture / context /
worker, its MAP mode, BCC, Siamese, triplet, the CSN oracle and the paper's
point-estimate CEN, worker-only and context-only) fitted with its defaults
at the paper's K. Fit seconds are measured with one torch thread per
process, ``--jobs`` processes side by side, so they compare methods within
this run only (``benchmarks.scale`` times fits alone).

Writes ``learning_curves.{csv,md,png}`` (mean ± sd over seeds of accuracy,
NLL, ECE, Brier and fit seconds) and ``retrieval.{md,png}`` (attribute ×
dim confusion and row entropy of each CEN variant at the full training set).
A long run can be done in parts (``--resume``): the CSV keeps every row, and
the tables use the seeds every method has finished, so methods are always
compared on the same splits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cen_bayes.atomic import atomic_path, write_text  # noqa: E402
from benchmarks.runner import (ALL_METHODS, REFERENCES, Job, add_run_arguments, code_line, machine,  # noqa: E402
                               mean_sd, run_jobs)

FRACTIONS = (0.1, 0.3, 1.0)
SCORES = {"accuracy": "acc", "nll": "NLL", "ece": "ECE", "brier": "Brier", "fit_seconds": "fit s"}
CEN_VARIANTS = ("cen-choice", "cen-mixture", "cen-context", "cen-worker", "map-mixture",
                "paper-cen", "paper-context", "paper-worker")


def complete_seeds(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of the seeds that every method has finished, the other rows), per dataset and fraction.

    A mean over seeds compares methods only if each method had the same splits: a
    run stopped part-way keeps its rows in the CSV (``--resume`` goes on from them)
    but its unfinished seeds stay out of the tables. Methods are counted per dataset and
    fraction, so a dataset or fraction run with fewer methods (``--methods``) still shows
    the ones it has."""
    fitted = frame.groupby(["dataset", "fraction", "seed"]).method.transform("nunique")
    complete = fitted == frame.groupby(["dataset", "fraction"]).method.transform("nunique")
    return frame[complete], frame[~complete]


def table(frame: pd.DataFrame, dataset: str) -> str:
    """Methods × fractions, mean ± sd of each score, best accuracy per fraction in bold."""
    part = frame[frame.dataset == dataset]
    by = ["method", "fraction"]
    cells = pd.DataFrame({label: mean_sd(part, col, by, 1 if col == "fit_seconds" else 3)
                          for col, label in SCORES.items()})
    hits = part.groupby("fraction").n_train_hits.mean()
    lines = []
    for fraction in sorted(part.fraction.unique()):
        sub = cells.xs(fraction, level="fraction")
        order = part[part.fraction == fraction].groupby("method").accuracy.mean().sort_values(ascending=False)
        sub = sub.loc[order.index]
        sub.iloc[0] = [f"**{v}**" if i == 0 else v for i, v in enumerate(sub.iloc[0])]
        lines += [f"### {fraction:g} of the training grids ({hits[fraction]:.0f} HITs)", "",
                  sub.to_markdown(), ""]
    return "\n".join(lines)


def plot_curves(frame: pd.DataFrame, path: Path) -> None:
    datasets = list(frame.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = frame[frame.dataset == dataset]
        stats = part.groupby(["method", "fraction"]).agg(acc=("accuracy", "mean"), sd=("accuracy", "std"),
                                                         hits=("n_train_hits", "mean"))
        for n, method in enumerate(m for m in ALL_METHODS if m in part.method.unique()):
            s = stats.loc[method]
            style = "-" if method.startswith(("cen", "map")) else "--"
            ax.errorbar(s.hits, s.acc, yerr=s.sd.fillna(0), marker="o", ms=3, ls=style, capsize=2, label=method,
                        color=plt.cm.tab20(2 * n % 20 + 2 * n // 20))  # ten hues, then their light shades
        ax.axhline(part.majority_accuracy.mean(), color="grey", lw=0.8, ls=":", label="majority")
        ax.set(xscale="log", xlabel="training HITs", ylabel="held-out pair accuracy", title=dataset)
        ticks = sorted(stats.hits.unique())
        ax.set_xticks(ticks, [f"{t:.0f}" for t in ticks])
        ax.minorticks_off()
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, dpi=120)
    plt.close(fig)


def retrieval_report(frame: pd.DataFrame, out: Path, dataset: str) -> str:
    """Fig. 4 for each CEN variant at the full training set: confusion of seed 0 and row entropy
    (mean ± sd over seeds); also drawn to ``retrieval.png``."""
    part = frame[(frame.dataset == dataset) & (frame.fraction == 1.0) & frame.method.isin(CEN_VARIANTS)
                 & frame.retrieval_json.notna() & (frame.retrieval_json != "")]
    if part.empty:
        return f"No attribute retrieval for {dataset} at the full training set in this run.\n"
    methods = [m for m in CEN_VARIANTS if m in part.method.unique()]
    entropy = {}
    for method in methods:
        rows = [pd.Series(json.loads(r)["row_entropy"]) for r in part[part.method == method].retrieval_json]
        accuracy = [pd.Series(json.loads(r)["per_attribute_accuracy"])
                    for r in part[part.method == method].retrieval_json]
        e, a = pd.concat(rows, axis=1), pd.concat(accuracy, axis=1)
        entropy[method] = [f"{am:.2f} / {em:.2f}" for am, em in zip(a.mean(axis=1), e.mean(axis=1))]
        attributes = e.index
    lines = [f"# Attribute retrieval on {dataset} (paper Fig. 4; `python -m benchmarks.learning_curves`)", "",
             "Each HIT's most probable dim (Bayesian: argmax of the posterior mean P(dim used); point "
             "estimates: argmax of the activation) against the attribute the simulator says it used; noisy "
             "HITs excluded; dims matched to attributes by Hungarian assignment. Cells: share of the "
             "attribute's HITs on its matched dim / row entropy in nats (0 = every HIT on one dim), mean over "
             f"seeds {sorted(part.seed.unique().tolist())}, full training set.", "",
             pd.DataFrame(entropy, index=attributes).T.to_markdown(), "",
             "Mean retrieval accuracy: " + ", ".join(
                 f"{m} {part[part.method == m].retrieval_mean.mean():.3f}" for m in methods) + ".", ""]
    seed = part.seed.min()
    fig, axes = plt.subplots(2, (len(methods) + 1) // 2, figsize=(3.2 * ((len(methods) + 1) // 2), 5.8),
                             squeeze=False)
    for ax, method in zip(axes.flat, methods):
        r = json.loads(part[(part.method == method) & (part.seed == seed)].retrieval_json.iloc[0])
        confusion = pd.DataFrame(r["confusion"], index=list(r["confusion"]), columns=r["confusion_dims"]).astype(float).fillna(0)
        ax.imshow(confusion.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(confusion)), confusion.index, fontsize=7)
        ax.set_xticks(range(confusion.shape[1]), confusion.columns, fontsize=7)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("dim (matched first)", fontsize=7)
    for ax in axes.flat[len(methods):]:
        ax.axis("off")
    fig.suptitle(f"{dataset}: attribute × dim confusion, seed {seed}, full training set", fontsize=10)
    fig.tight_layout()
    with atomic_path(out / "retrieval.png") as partial:
        fig.savefig(partial, dpi=120)
    plt.close(fig)
    return "\n".join(lines) + "![confusion](retrieval.png)\n"


def gap_table(frame: pd.DataFrame) -> str:
    full = frame[(frame.fraction == 1.0) & frame.train_accuracy.notna()] if "train_accuracy" in frame else frame[:0]
    if full.empty:
        return "(no training accuracy recorded)"
    stats = full.groupby(["method", "dataset"]).agg(train=("train_accuracy", "mean"), heldout=("accuracy", "mean"))
    stats["gap"] = stats.train - stats.heldout
    cells = stats.apply(lambda r: f"{r.train:.3f} / {r.heldout:.3f} ({r.gap:+.3f})", axis=1).unstack("dataset")
    return cells.loc[[m for m in ALL_METHODS if m in cells.index]].to_markdown() + \
        "\n\nCells: training / held-out accuracy (gap), mean over the seeds that recorded training accuracy."


def comparisons(frame: pd.DataFrame) -> list[str]:
    """The headline comparisons at the full training set, one line each, from the seed means."""
    lines = []
    full = frame[frame.fraction == 1.0].groupby(["dataset", "method"]).mean(numeric_only=True)
    for dataset in frame.dataset.unique():
        m = full.loc[dataset]
        has = set(m.index).__ge__
        if has({"cen-choice", "paper-cen", "bcc"}):
            lines.append(f"- {dataset}: Bayesian CEN (choice) {m.loc['cen-choice', 'accuracy']:.3f} "
                         f"(NLL {m.loc['cen-choice', 'nll']:.3f}) vs paper recipe {m.loc['paper-cen', 'accuracy']:.3f} "
                         f"(NLL {m.loc['paper-cen', 'nll']:.3f}) vs BCC {m.loc['bcc', 'accuracy']:.3f} "
                         f"(NLL {m.loc['bcc', 'nll']:.3f}); majority {m.majority_accuracy.mean():.3f}.")
        if has({"map-mixture", "paper-cen"}):
            ratio = m.loc["paper-cen", "fit_seconds"] / m.loc["map-mixture", "fit_seconds"]
            lines.append(f"- {dataset}: MAP mode (the paper's loss, full-batch) fits in "
                         f"{m.loc['map-mixture', 'fit_seconds']:.1f} s, {ratio:.0f}× less than the paper recipe "
                         f"({m.loc['paper-cen', 'fit_seconds']:.1f} s), reaching eq. 8 training loss "
                         f"{m.loc['map-mixture', 'train_paper_loss']:.3f} vs {m.loc['paper-cen', 'train_paper_loss']:.3f}; "
                         f"held-out accuracy {m.loc['map-mixture', 'accuracy']:.3f} vs "
                         f"{m.loc['paper-cen', 'accuracy']:.3f}.")
        for names in (("cen-mixture", "cen-context", "cen-worker"), ("paper-cen", "paper-context", "paper-worker")):
            if has(set(names)):
                order = " > ".join(f"{n} {m.loc[n, 'accuracy']:.3f}" for n in sorted(names, key=lambda n: -m.loc[n, "accuracy"]))
                lines.append(f"- {dataset}: {order} (paper: mixture > context > worker).")
    return lines


def summary(frame: pd.DataFrame, jobs: int, pending: pd.DataFrame | None = None) -> str:
    waiting = ""
    if pending is not None and not pending.empty:
        seeds = pending[["dataset", "seed", "fraction"]].drop_duplicates().itertuples(index=False)
        waiting = (f" {len(pending)} more fits in the CSV belong to seeds not every method has finished ("
                   + ", ".join(f"{d} seed {s} at {f:g}" for d, s, f in seeds)
                   + "); they join the tables when their seed is complete (`--resume`).")
    lines = ["# Held-out label prediction vs training data (`python -m benchmarks.learning_curves`)", "",
             f"{machine()}, {code_line(frame)}, {jobs} processes with "
             f"1 torch thread each; seeds {sorted(frame.seed.unique().tolist())}; {len(frame)} fits, "
             f"{frame.fit_seconds.sum() / 60:.0f} min of fitting in all. "
             "15 % of grids held out whole; mean ± sd over seeds; per-fit rows in `learning_curves.csv`. "
             "`csn` is an oracle (told each HIT's true attribute). Fit seconds depend on what ran beside a fit: "
             "compare them only between rows of one run (one code version above); `benchmarks.scale` times "
             "fits alone." + waiting, "", "![learning curves](learning_curves.png)", "",
             "## At the full training set", "", *comparisons(frame), ""]
    for dataset in frame.dataset.unique():
        part = frame[frame.dataset == dataset]
        lines += [f"## {dataset} (K = {part.K.iloc[0]}; seeds {sorted(part.seed.unique().tolist())}; "
                  "always-majority accuracy "
                  f"{part.majority_accuracy.mean():.3f})", "", table(frame, dataset)]
    lines += ["## Training vs held-out accuracy at the full training set", "",
              "A method that explains its training HITs but not unseen grids over-fits; rows that recorded it "
              "(`train_accuracy`: the same 0.5 threshold on the training pairs).", "",
              gap_table(frame), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learning_curves",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["retina", "celeba", "birds"])
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS + REFERENCES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--retrieval-dataset", default="celeba", help="dataset of the Fig. 4 confusion")
    parser.add_argument("--report-only", action="store_true",
                        help="fit nothing: redraw the reports from every row of OUT/learning_curves.csv "
                             "(after runs in parts; give the --jobs they ran with)")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        frame = pd.read_csv(out / "learning_curves.csv")
    else:
        jobs = [Job(dataset, seed, method, fraction, smoke=args.smoke, device=args.device)
                for seed in args.seeds for dataset in args.datasets
                for fraction in sorted(args.fractions, reverse=True) for method in args.methods]
        frame = run_jobs(jobs, out / "learning_curves.csv", args.jobs, resume=args.resume)
    frame, pending = complete_seeds(frame)
    plot_curves(frame, out / "learning_curves.png")
    write_text(out / "learning_curves.md", summary(frame, args.jobs, pending))
    write_text(out / "retrieval.md", retrieval_report(frame, out, args.retrieval_dataset))
    print(f"wrote {out}/learning_curves.{{csv,md,png}} and retrieval.{{md,png}}")


if __name__ == "__main__":
    main()
