"""Figures of a fit: ``python -m inference.report RUN_DIR [--out DIR]``.

Reads the output folder of ``python -m inference.svi`` and writes one PNG per
figure. The figures follow the paper where it has one (Fig. 4, 6/7, 8, S1)
and add the checks a Bayesian fit needs (ELBO trace, calibration, HITs no
attribute explains). A figure whose inputs are missing (no ground truth, no
diagnostics, a variant without worker activations) is skipped with a
one-line reason, so the same call works on simulated and on real data.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import arviz as az  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from cen_bayes.atomic import atomic_path  # noqa: E402
from cen_bayes.datasets import NOISE_KINDS  # noqa: E402
from cen_bayes.metrics import attribute_retrieval, reliability_table  # noqa: E402
from inference.hit_uncertainty import UNCERTAIN_ABOVE  # noqa: E402

MAX_AXES = 10  # attribute-axis panels without ground truth
IDS = {column: str for column in ["worker_id", "grid_id", "image_id", "image_i", "image_j"]}  # as in posterior.nc


class Skip(Exception):
    """A figure's inputs are missing; the message says which."""


def _read(path: Path, reader):
    return reader(path) if path.exists() else None


def _read_csv(path: Path):
    return pd.read_csv(path, dtype=IDS)


def load_run(run_dir) -> SimpleNamespace:
    """Everything the figures read; a missing file becomes None."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    idata = _read(run_dir / "posterior.nc", az.from_netcdf)
    assignment = metrics.get("attribute_retrieval", {}).get("assignment", {})
    K = int(metrics["K"])
    # Matched dims first (in the assignment's attribute order), then the rest.
    order = list(assignment.values()) + [k for k in range(K) if k not in assignment.values()]
    names = {dim: attr for attr, dim in assignment.items()}
    return SimpleNamespace(
        metrics=metrics, K=K, order=order, assignment=assignment,
        labels={k: f"dim {k}" + (f"\n{names[k]}" if k in names else "") for k in range(K)},
        hits=_read(run_dir / "hits.csv", _read_csv),
        pairs=_read(run_dir / "heldout_pairs.parquet", pd.read_parquet) if (run_dir / "heldout_pairs.parquet").exists()
        else _read(run_dir / "heldout_pairs.csv", _read_csv),
        embeddings=_read(run_dir / "embeddings.csv", _read_csv),
        posterior=idata.posterior if idata is not None else None,
    )


def _need(ok, reason: str) -> None:
    if not ok:
        raise Skip(reason)


def _n_draws(posterior) -> int:
    return posterior.sizes["chain"] * posterior.sizes["draw"]


def _true_levels(run) -> dict[str, pd.Series]:
    """Each image's level of each simulated attribute, indexed by image id."""
    emb = run.embeddings.set_index("image_id")
    return {c.removeprefix("true_"): emb[c] for c in emb.columns if c.startswith("true_")}


def _has_hit_truth(run) -> bool:
    return "true_attribute" in run.hits and run.hits["true_attribute"].notna().any()


def elbo(run) -> plt.Figure:
    """Did the optimiser converge? A trace still rising means more steps; the
    PSIS k-hat says whether the guide's spreads can be trusted (> 0.7: no)."""
    diag = run.metrics.get("diagnostics")
    _need(diag and diag.get("elbo_per_pair"), "metrics.json has no diagnostics.elbo_per_pair")
    values = np.asarray(diag["elbo_per_pair"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(diag["elbo_step"], values, lw=1.2)
    # The first steps fall far below the rest; clip them so the later trend stays visible.
    low, high = np.percentile(values, 1), values.max()
    ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    objective = "log joint (MAP)" if run.metrics.get("map") else "ELBO"
    khat = diag.get("psis_khat")
    ax.set(xlabel="step", ylabel=f"{objective} per training pair (nats)",
           title=f"{objective} per training pair, higher is better"
                 + (f"   (PSIS k̂ = {khat:.2f})" if khat is not None else ""))
    ax.grid(alpha=0.3)
    if diag.get("warning"):
        fig.text(0.01, -0.02, textwrap.fill("Warning: " + diag["warning"], 110), va="top", fontsize=8, color="C3")
    return fig


def worker_activations(run) -> plt.Figure:
    """Paper Fig. S1: which attributes each worker prefers. Rows are the share
    a_w / sum_k a_w; the right panel shows how sure the posterior is of it."""
    _need(run.posterior is not None and "a_w" in run.posterior, "posterior.nc has no worker activations a_w")
    a_w = run.posterior["a_w"].isel(attribute=run.order)
    share = a_w / a_w.sum("attribute")
    mean = share.mean(("chain", "draw")).to_numpy()
    lo, hi = share.quantile([0.05, 0.95], dim=("chain", "draw")).to_numpy()
    rows = np.lexsort((-mean.max(1), mean.argmax(1)))  # by dominant dim, then by its share
    workers = run.posterior["worker"].to_numpy()[rows]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 1.1 * run.K, 2 + 0.14 * len(workers)), sharey=True,
                             layout="constrained")
    panels = [(mean[rows], "posterior mean", "viridis", "share of the worker's activation"),
              ((hi - lo)[rows], "uncertainty", "magma", "width of the share's 90% credible interval")]
    for ax, (values, title, cmap, label) in zip(axes, panels):
        image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks(range(run.K), [run.labels[k] for k in run.order], rotation=90, fontsize=8)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label=label)
    if _n_draws(run.posterior) == 1:
        axes[1].text(run.K / 2 - 0.5, len(workers) / 2, "MAP fit:\nno credible intervals",
                     ha="center", va="center", color="white", fontsize=12)
    axes[0].set_yticks(range(len(workers)), workers if len(workers) <= 100 else [], fontsize=6)
    axes[0].set_ylabel("worker (sorted by dominant dim)")
    fig.suptitle("Worker attribute activations (paper Fig. S1)")
    return fig


def attribute_axes(run) -> plt.Figure:
    """Paper Fig. 6/7: the images laid out along single embedding dims. With
    ground truth, a dim that learned its attribute sorts the colours."""
    _need(run.posterior is not None and run.embeddings is not None, "posterior.nc or embeddings.csv missing")
    x = run.posterior["x"].sel(image=run.embeddings["image_id"].to_numpy())
    mean = x.mean(("chain", "draw")).to_numpy()
    lo, hi = x.quantile([0.05, 0.95], dim=("chain", "draw")).to_numpy()
    levels = _true_levels(run)
    if run.assignment:
        panels = [(dim, attr) for attr, dim in run.assignment.items()]
    else:  # spread of the images relative to their own uncertainty: learned dims first, prior-like ones last
        signal = mean.std(0) / (np.sqrt((x.std(("chain", "draw")).to_numpy() ** 2).mean(0)) + 1e-9)
        panels = [(int(k), None) for k in np.argsort(-signal)[:MAX_AXES]]
    with_intervals = _n_draws(run.posterior) > 1
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (dim, attr) in zip(axes.flat, panels):
        order = np.argsort(mean[:, dim])
        rank = np.arange(len(order))
        level = levels[attr].to_numpy()[order] if attr in levels else np.zeros(len(order), int)
        for value in np.unique(level):
            keep = level == value
            idx = order[keep]
            xerr = [mean[idx, dim] - lo[idx, dim], hi[idx, dim] - mean[idx, dim]] if with_intervals else None
            ax.errorbar(mean[idx, dim], rank[keep], xerr=xerr, fmt="o", ms=2.5, lw=0.6, alpha=0.8,
                        color=f"C{value}" if attr in levels else "0.3",
                        label=f"{attr} = {value}" if attr in levels else None)
        ax.set(title=run.labels[dim].replace("\n", ": "), xlabel="embedding coordinate",
               ylabel="image (sorted by mean)", yticks=[])
        if attr in levels:
            ax.legend(fontsize=7, loc="upper left", markerscale=2)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    note = "posterior mean ± 90% credible interval" if with_intervals else "MAP point estimate: no intervals"
    fig.suptitle(f"Images along attribute dims (paper Fig. 6/7); {note}")
    fig.tight_layout()
    return fig


def tsne(run) -> plt.Figure:
    """Paper Fig. 8/S2: a 2-D map of the whole embedding. Compact colours mean
    the joint embedding separates that attribute's levels."""
    _need(run.embeddings is not None, "embeddings.csv missing")
    X = run.embeddings[[f"mean_{k}" for k in range(run.K)]].to_numpy()
    xy = TSNE(perplexity=min(30.0, (len(X) - 1) / 3), random_state=0).fit_transform(X)
    levels = _true_levels(run) or {None: None}
    fig, axes = plt.subplots(1, len(levels), figsize=(3.6 * len(levels), 3.8), squeeze=False)
    for ax, (attr, level) in zip(axes.flat, levels.items()):
        if level is None:
            ax.scatter(*xy.T, s=8, color="0.3")
        else:
            for value in np.unique(level):
                keep = level.to_numpy() == value
                ax.scatter(*xy[keep].T, s=8, color=f"C{value}", label=f"level {value}")
            ax.legend(fontsize=7, markerscale=1.5)
        ax.set(title=attr or "posterior-mean embedding", xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
    fig.suptitle("t-SNE of the posterior-mean embedding (paper Fig. 8/S2)")
    fig.tight_layout()
    return fig


def retrieval(run) -> plt.Figure:
    """Paper Fig. 4: does the most probable dim of each HIT name the attribute
    its worker really used? Low row entropy = one attribute, one dim."""
    _need(run.hits is not None and _has_hit_truth(run), "hits.csv has no true_attribute column")
    predicted = run.hits[[f"p_attr_{k}" for k in range(run.K)]].to_numpy().argmax(1)
    result = attribute_retrieval(run.hits["true_attribute"].to_numpy(), predicted, n_dims=run.K)
    conf = result.confusion
    fig, (left, right) = plt.subplots(1, 2, figsize=(4 + 0.7 * run.K, 1.5 + 0.6 * len(conf)),
                                      gridspec_kw={"width_ratios": [run.K, 3]})
    image = left.imshow(conf.to_numpy(), cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(conf.to_numpy()):
        if value >= 0.005:
            left.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if value > 0.6 else "black")
    left.set_xticks(range(run.K), [f"dim {k}" for k in conf.columns], rotation=90)
    left.set_yticks(range(len(conf)), conf.index)
    left.set(xlabel="predicted dim (argmax of p_attr)", ylabel="true attribute",
             title="(a) confusion, row-normalised")
    fig.colorbar(image, ax=left, fraction=0.04, pad=0.02)
    entropy = result.row_entropy.to_numpy()
    right.barh(range(len(conf)), entropy, color="C0")
    for i, value in enumerate(entropy):
        right.text(value, i, f" {value:.2f}", va="center", fontsize=8)
    right.set_yticks(range(len(conf)), conf.index)
    right.set_xlim(0, 1.25 * max(np.nanmax(entropy), 0.1))
    right.invert_yaxis()
    right.set(xlabel="row entropy (nats)", title="(b) entropy H")
    fig.suptitle(f"Attribute retrieval (paper Fig. 4): mean accuracy {result.mean_accuracy:.2f}\n"
                 f"{result.n_excluded} HITs without a listed attribute left out", fontsize=10)
    fig.tight_layout()
    return fig


def reliability(run) -> plt.Figure:
    """Is P(same) on unseen grids honest? Points on the diagonal are calibrated;
    the histogram shows how many pairs each point rests on."""
    _need(run.pairs is not None and len(run.pairs), "heldout_pairs missing or empty")
    table = reliability_table(run.pairs["label"], run.pairs["p_same"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="0.5", label="perfect calibration")
    top.plot(table["mean_p"], table["frac_same"], "o-", color="C0", label="held-out pairs")
    top.set(ylabel="observed share of 'same' pairs", xlim=(0, 1), ylim=(0, 1))
    top.legend(loc="upper left")
    held = run.metrics.get("heldout", {})
    top.set_title(f"Reliability of held-out P(same)\nECE {held.get('ece', float('nan')):.3f}, "
                  f"accuracy {held.get('accuracy', float('nan')):.3f}, {len(run.pairs):,} pairs")
    bottom.bar(table["bin_lower"], table["count"], width=table["bin_upper"] - table["bin_lower"],
               align="edge", color="C0", alpha=0.6, edgecolor="white")
    bottom.set(xlabel="predicted P(same) (bin mean)", ylabel="pairs")
    fig.tight_layout()
    return fig


def hit_uncertainty(run) -> plt.Figure:
    """How many HITs does no single dim explain? With simulated noise, the
    flagged ones should be the noisy HITs. The counts are of the ``uncertain``
    flag, which also takes high-entropy HITs (``inference.hit_uncertainty``)."""
    _need(run.hits is not None and "p_unexplained" in run.hits,
          "hits.csv has no per-HIT uncertainty (an attribute-blind or point-estimate method)")
    u, flagged = run.hits["p_unexplained"], run.hits["uncertain"]
    if "true_noise" in run.hits:
        kinds = [k for k in ("none",) + NOISE_KINDS if k in set(run.hits["true_noise"])]
        kinds += sorted(set(run.hits["true_noise"].dropna()) - set(kinds))
        groups = {f"true noise: {k}": run.hits["true_noise"] == k for k in kinds}
    else:
        groups = {"all HITs": pd.Series(True, index=run.hits.index)}
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 1, 3.4), sharex=True, squeeze=False,
                             layout="constrained")
    for i, (ax, (title, rows)) in enumerate(zip(axes.flat, groups.items())):
        ax.hist(u[rows], bins=np.linspace(0, 1, 21), color=f"C{i}")
        ax.axvline(UNCERTAIN_ABOVE, color="C3", ls="--", label=f"threshold {UNCERTAIN_ABOVE}")
        ax.set(title=f"{title}\n{int(flagged[rows].sum())} of {int(rows.sum())} flagged",
               xlabel="1 − max_k p_attr_k", ylabel="HITs" if i == 0 else None)
    axes.flat[0].legend(fontsize=8, loc="upper center")
    fig.suptitle("Per-HIT uncertainty: probability that no single attribute dim explains the HIT")
    return fig


FIGURES = {"elbo": elbo, "worker_activations": worker_activations, "attribute_axes": attribute_axes,
           "tsne": tsne, "attribute_retrieval": retrieval, "reliability": reliability,
           "hit_uncertainty": hit_uncertainty}


def write_report(run_dir, out=None) -> list[Path]:
    """Write every figure whose inputs exist as ``<out>/<name>.png``; returns the files written."""
    run = load_run(run_dir)
    out = Path(out or run_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in FIGURES.items():
        try:
            fig = make(run)
        except Skip as reason:
            print(f"skipped {name}.png: {reason}")
            continue
        path = out / f"{name}.png"
        with atomic_path(path) as partial:
            fig.savefig(partial, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inference.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="output folder of python -m inference.svi")
    parser.add_argument("--out", help="where to write the PNGs (default RUN_DIR)")
    args = parser.parse_args(argv)
    for path in write_report(args.run_dir, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
