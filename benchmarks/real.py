"""Every method on real crowd partitions: ImageNet grids sorted by anonymous people.

    python -m benchmarks.real                          # reads ../shared/real/orchestra-imagenet
    python -m benchmarks.real --data-dir DIR           # any folder with annotations.csv + truth_images.csv
    python -m benchmarks.real --smoke --out /tmp/x     # a small simulated stand-in of the same shape

The data (see its README) are 41 grids of 35 ImageNet images, each
partitioned by 5 people with no worker ids, so every answer is its own
one-off worker; 20 categories are kept for evaluation only. They are read
where they lie and never copied into the project; without them the run
stops and says where it looked.

Per seed, 15 % of the grids are held out whole (all five answers), every
method fits the rest, and predicts the held-out pairs: accuracy, NLL, ECE,
Brier. Held-out workers are all new, and so are many held-out images (an
image sits in 1 to 4 grids), so the rows also score the held-out pairs
whose two images were both seen in training. References on the same pairs:
always "different" and the same-category oracle (the hard rule, and a
calibrated version that predicts the training share of "same" among
same-category and among different-category pairs). The image embedding of
images seen in training is clustered (K-means and a DP mixture, 20
clusters) against the categories. For the Bayesian CEN, the categories a
new person would merge are read off the posterior: P(same) of every
training pair under a worker drawn from the learned crowd, averaged per
pair of categories, per draw.

``csn`` is left out: it is an oracle told the attribute each HIT used,
which real data do not have.

Writes ``real.{csv,md}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.runner import Job, add_run_arguments, chosen_model, code_line, fit_job, machine, mean_sd, run_jobs
from cen_bayes.atomic import write_text
from cen_bayes.crowd import CrowdData
from cen_bayes.metrics import cluster_embedding, clustering_scores, pair_scores
from cen_bayes.splits import seen_images, split_by_grid
from inference.evaluate import seen_unseen_scores

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "real" / "orchestra-imagenet"
METHODS = ("cen-auto", "cen-kind", "cen-choice", "cen-mixture", "cen-context", "cen-worker", "map-mixture",
           "bcc", "siamese", "triplet", "paper-cen", "paper-worker", "paper-context")
MERGE_MIN_PAIRS = 30  # a category pair needs this many training pairs to be read
REFERENCE_NAMES = ("always different", "same-category oracle (rule)", "same-category oracle (calibrated)")


@dataclass(frozen=True)
class RealJob(Job):
    data_dir: str = ""


class MissingData(FileNotFoundError):
    pass


@functools.lru_cache(maxsize=1)
def load_real(data_dir: str) -> tuple[CrowdData, np.ndarray]:
    """The annotation table as CrowdData and each image's category (data.images order)."""
    folder = Path(data_dir)
    table, truth = folder / "annotations.csv", folder / "truth_images.csv"
    missing = [str(p) for p in (table, truth) if not p.is_file()]
    if missing:
        raise MissingData(f"real crowd data not found: {', '.join(missing)} missing; this benchmark reads "
                          "../shared/real/orchestra-imagenet (or --data-dir DIR) and never copies it")
    data = CrowdData.from_source(table)
    category = pd.read_csv(truth).set_index("image_id")["category"]
    unknown = pd.Index(data.images).difference(category.index)
    if len(unknown):
        raise ValueError(f"{truth}: no category for {len(unknown)} images, e.g. {unknown[0]!r}")
    return data, category.reindex(data.images).to_numpy(dtype=str)


def category_rates(labels: np.ndarray, same_category: np.ndarray) -> tuple[float, float]:
    """Share of 'same' among same-category and among different-category pairs."""
    return float(labels[same_category].mean()), float(labels[~same_category].mean())


def held_out(data: CrowdData, seed: int):
    """A seed's split (15 % of grids whole), its training and test pairs, which images training saw,
    and which test pairs have both images seen."""
    split = split_by_grid(data, 0.15, seed=seed)
    train, test = (data.pairs.subset(m) for m in split.pair_masks(data))
    seen = seen_images(data, split.train_hits)
    return split, train, test, seen, seen[test.i.numpy()] & seen[test.j.numpy()]


def seen_unseen_columns(metrics: dict) -> dict:
    """Accuracy, NLL and ECE of the held-out pairs whose two images a training grid showed, and of the
    rest, as flat columns, from ``inference.evaluate.seen_unseen_scores`` (NaN for an empty part)."""
    return {f"{score}_{part}_pairs": metrics[f"heldout_{key}"].get(score, np.nan)
            for part, key in (("seen", "both_images_seen"), ("unseen", "an_image_unseen"))
            for score in ("accuracy", "nll", "ece")}


def references(data: CrowdData, category: np.ndarray, seed: int) -> list[dict]:
    """Always 'different' and the same-category oracle (hard and calibrated) on a seed's held-out pairs."""
    _, train, test, _, both_seen = held_out(data, seed)
    same_cat = {name: category[p.i.numpy()] == category[p.j.numpy()] for name, p in (("train", train), ("test", test))}
    y = test.label.numpy()
    in_cat, out_cat = category_rates(train.label.numpy(), same_cat["train"])
    predictors = {"always different": np.full(len(test), 0.0),
                  "same-category oracle (rule)": same_cat["test"].astype(float),
                  "same-category oracle (calibrated)": np.where(same_cat["test"], in_cat, out_cat)}
    rows = []
    for name, p in predictors.items():
        scores = pair_scores(y, p)
        rows.append({"dataset": "orchestra-imagenet", "seed": seed, "method": name, "fraction": 1.0,
                     **{k: scores[k] for k in ("accuracy", "nll", "ece", "brier", "majority_accuracy")},
                     **seen_unseen_columns(seen_unseen_scores(y, p, both_seen)),
                     "share_seen_pairs": float(both_seen.mean()), "n_test_pairs": len(test)})
    return rows


def crowd_merges(model, draws, data: CrowdData, pairs, category: np.ndarray) -> list[list]:
    """Per pair of categories with ``MERGE_MIN_PAIRS`` training pairs: [a, b, pairs, observed share of
    'same', posterior mean, 5 %, 95 %] of P(same) under a worker drawn from the learned crowd."""
    from inference import predict
    nobody = torch.zeros(model.n_workers, dtype=torch.bool, device=model.label.device)
    crowd = [predict.Draw(**predict.unseen_worker_prior(model, vars(d), nobody, point=False)) for d in draws]
    p = predict.pair_probability_draws(model, crowd, data, pairs)  # (draws, pairs)
    names, codes = np.unique(category, return_inverse=True)
    a, b = codes[pairs.i.numpy()], codes[pairs.j.numpy()]
    key = np.minimum(a, b) * len(names) + np.maximum(a, b)
    keys, index, count = np.unique(key, return_inverse=True, return_counts=True)
    per_draw = np.stack([np.bincount(index, weights=row, minlength=len(keys)) for row in p]) / count
    observed = np.bincount(index, weights=pairs.label.numpy(), minlength=len(keys)) / count
    lo, hi = np.quantile(per_draw, [0.05, 0.95], axis=0)
    return [[names[k // len(names)], names[k % len(names)], int(n), round(float(o), 4), round(float(m), 4),
             round(float(l), 4), round(float(h), 4)]
            for k, n, o, m, l, h in zip(keys, count, observed, per_draw.mean(0), lo, hi) if n >= MERGE_MIN_PAIRS]


def real_job(job: RealJob) -> dict:
    """Fit one method on one seed's split of the real data and score it."""
    torch.set_num_threads(job.threads)
    data, category = load_real(job.data_dir)
    split, train, test, seen, both_seen = held_out(data, job.seed)
    result, _ = fit_job(job, data, split)
    n_categories = len(np.unique(category))
    clustering = {how: clustering_scores(category[seen], cluster_embedding(result.embedding[seen], n_categories,
                                                                             how, job.seed))
                  for how in ("kmeans", "dpgmm")}
    merges = crowd_merges(result.model, result.draws, data, train, category) if job.method.startswith("cen-") else None
    return {"dataset": job.dataset, "seed": job.seed, "method": job.method, "fraction": 1.0, "K": job.k,
            "gamma": job.gamma_value,
            **{k: result.metrics["heldout"][k] for k in ("accuracy", "nll", "ece", "brier", "majority_accuracy")},
            **seen_unseen_columns(result.metrics),
            "share_seen_pairs": float(both_seen.mean()), "n_test_pairs": len(test), "n_train_pairs": len(train),
            "chosen": chosen_model(result.metrics),
            **{f"{how}_{score}": clustering[how][score] for how in clustering for score in ("mcc", "nmi", "f1")},
            "n_clustered_images": int(seen.sum()),
            "merges_json": json.dumps(merges) if merges is not None else "",
            "fit_seconds": result.metrics["fit_seconds"],
            "selection_seconds": result.metrics.get("selection_seconds", np.nan), "threads": job.threads,
            "device": job.device}


def describe(data: CrowdData, category: np.ndarray) -> str:
    """The data's shape, measured from the file."""
    answers = data.hits.groupby("grid").size()
    same_cat = category[data.pairs.i.numpy()] == category[data.pairs.j.numpy()]
    y = data.pairs.label.numpy()
    return (f"{data.n_grids} grids, {data.n_hits} answers ({answers.min()}–{answers.max()} per grid) by "
            f"{data.n_workers} workers, {data.n_images} images in {len(np.unique(category))} categories; "
            f"{len(y):,} pairs, {y.mean():.1%} 'same'. On all pairs, always 'different' scores "
            f"{1 - y.mean():.3f} and 'same iff same category' {(same_cat == y.astype(bool)).mean():.3f}.")


def merges_report(frame: pd.DataFrame, top: int = 10) -> list[str]:
    """The categories a new person would merge and split, from the Bayesian fit with the best held-out
    accuracy (the choice variant, best by NLL, spreads a new person over one-attribute sorts, so its
    crowd-level P(same) is diluted: 0.6 for pairs people put together 95 % of the time)."""
    bayes = frame[frame.merges_json.fillna("").str.len() > 0]
    if bayes.empty:
        return []
    best = bayes.groupby("method").accuracy.mean().idxmax()
    row = bayes[bayes.method == best].sort_values("seed").iloc[0]
    merges = pd.DataFrame(json.loads(row.merges_json),
                          columns=["category", "with", "pairs", "observed", "posterior mean", "5 %", "95 %"])
    cross, within = merges[merges.category != merges["with"]], merges[merges.category == merges["with"]]
    corr = np.corrcoef(merges.observed, merges["posterior mean"])[0, 1]
    fmt = lambda t: t.to_markdown(index=False, floatfmt=".3f")  # noqa: E731
    return ["## Which categories people merge, read off the posterior", "",
            f"`{best}` (the Bayesian CEN with the best held-out accuracy), seed {row.seed}: P(same) of each training "
            "pair under a worker drawn from the learned crowd (a new person, in that grid's context), averaged "
            "over the pairs of each pair of categories, per posterior draw; mean and 90 % interval over draws. "
            f"`observed`: the share of those pairs the people put together. Category pairs with at least "
            f"{MERGE_MIN_PAIRS} training pairs ({len(merges)}; correlation of posterior mean and observed share "
            f"{corr:.2f}). Pairs of different categories that people put together are where the same-category "
            "oracle is wrong: a model that learns them can beat it.", "",
            "Most merged pairs of different categories:", "",
            fmt(cross.sort_values("posterior mean", ascending=False).head(top)), "",
            "Most split categories (pairs within one category):", "",
            fmt(within.sort_values("posterior mean").head(5)), ""]


def report(frame: pd.DataFrame, data: CrowdData, category: np.ndarray, where: str) -> str:
    by = ["method"]
    order = list(dict.fromkeys(frame.method))
    cols = ["accuracy", "nll", "ece", "brier", "fit_seconds"]
    table = pd.DataFrame({c: mean_sd(frame, c, by, 1 if c == "fit_seconds" else 3) for c in cols}).loc[order]
    table.columns = ["accuracy", "NLL", "ECE", "Brier", "fit s"]
    parts = [f"{score}_{part}_pairs" for part in ("seen", "unseen") for score in ("accuracy", "nll", "ece")]
    by_seen = pd.DataFrame({c: mean_sd(frame, c, by) for c in parts}).loc[order]
    by_seen.columns = [f"{part}: {score}" for part in ("both seen", "an image unseen")
                       for score in ("accuracy", "NLL", "ECE")]
    chosen = frame[frame["chosen"].fillna("").str.len() > 0] if "chosen" in frame else frame.iloc[:0]
    choices = "; ".join(f"seed {r.seed}: {r.chosen}" for r in chosen.sort_values("seed").itertuples())
    fits = frame[frame.fit_seconds.notna()]
    clust_cols = [f"{how}_{s}" for how in ("kmeans", "dpgmm") for s in ("mcc", "nmi")]
    fitted = [m for m in order if m in set(fits.method)]
    clustering = pd.DataFrame({c: mean_sd(fits, c, by) for c in clust_cols}).loc[fitted]
    clustering.columns = ["K-means MCC", "K-means NMI", "DP mixture MCC", "DP mixture NMI"]
    means = frame.groupby("method").mean(numeric_only=True)
    majority, oracle = means.loc["always different", "accuracy"], means.loc["same-category oracle (rule)", "accuracy"]
    methods = means.drop([m for m in means.index if m in REFERENCE_NAMES])
    best = methods.accuracy.idxmax()
    position = (methods.loc[best, "accuracy"] - majority) / (oracle - majority)
    lines = ["# Real crowd partitions: ImageNet grids (`python -m benchmarks.real`)", "",
             f"Data: `{where}` (read in place, not part of the project). {describe(data, category)}", "",
             f"{machine()}, {code_line(fits)}, 1 torch thread per fit; seeds {sorted(frame.seed.unique().tolist())} "
             f"(each its own hold-out of 15 % of the grids, whole); K = {int(fits.K.iloc[0])}; mean ± sd over "
             "seeds; per-fit rows in `real.csv`. Every held-out answer is by a new worker; "
             f"{means.share_seen_pairs.mean():.0%} of held-out pairs have both images in a training grid "
             "(scored apart below). `csn` is not run: it needs each HIT's true attribute.", "",
             "## Held-out pairs", "", table.to_markdown(), "",
             *([f"`cen-auto` chose: {choices} (`inference.select`: validation NLL on 20 % of the training "
                "grids).", ""] if choices else []),
             "### Pairs whose two images a training grid showed, and the rest", "",
             "An image no training grid showed has no learned embedding: the Bayesian CEN predicts its pairs from "
             "the collection's learned embeddings (`inference.predict.new_image_embeddings`); the other methods "
             "from what their untrained parameters for it say.", "", by_seen.to_markdown(), "",
             f"Best method by accuracy: `{best}` {methods.loc[best, 'accuracy']:.3f}, "
             f"{position:.0%} of the way from always 'different' ({majority:.3f}) to the same-category "
             f"oracle ({oracle:.3f}).", "",
             f"## Clustering the learned embedding against the {len(np.unique(category))} categories", "",
             f"Images seen in training only (their embedding was learned; about "
             f"{fits.n_clustered_images.mean():.0f} per seed), K-means and a DP Gaussian mixture with as many "
             "clusters / components as categories.", "", clustering.to_markdown(), "", *merges_report(frame)]
    return "\n".join(lines)



def stand_in(folder: Path, seed: int = 0) -> Path:
    """A small simulated crowd shaped like the real data (anonymous one-off workers, several answers
    per grid, categories as truth) in ``folder``, for the smoke run."""
    from cen_bayes.datasets import DATASETS, simulate
    from inference.evaluate import image_classes
    sim = simulate(replace(DATASETS["tiny"], n_grids=16, hits_per_grid=3), seed=seed)
    table = sim.table.assign(worker_id=sim.table.worker_id.astype(str) + "@" + sim.table.grid_id.astype(str))
    table.to_csv(folder / "annotations.csv", index=False)
    data = CrowdData.from_table(sim.table)
    pd.DataFrame({"image_id": data.images, "category": image_classes(sim, data)}).to_csv(
        folder / "truth_images.csv", index=False)
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DIR))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--K", type=int, default=10)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = stand_in(Path(tmp)) if args.smoke else Path(args.data_dir)
        try:
            data, category = load_real(str(folder))
        except MissingData as error:
            sys.exit(f"benchmarks.real: {error}")
        jobs = [RealJob("orchestra-imagenet", seed, method, K=args.K, smoke=args.smoke, device=args.device,
                        data_dir=str(folder)) for seed in args.seeds for method in args.methods]
        out = Path(args.out)
        frame = run_jobs(jobs, out / "real.csv", args.jobs, resume=args.resume, fn=real_job)
    frame = pd.concat([frame[~frame.method.isin(REFERENCE_NAMES)],
                       pd.DataFrame([r for seed in args.seeds for r in references(data, category, seed)])])
    write_text(out / "real.md", report(frame, data, category, "stand-in (smoke)" if args.smoke else args.data_dir))
    print(f"wrote {out}/real.{{csv,md}}")


if __name__ == "__main__":
    main()
