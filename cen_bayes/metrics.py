"""Metric definitions shared by the CLI, the benchmarks and the tests.

Three questions, three groups of metrics:

* **Held-out pairs** (paper §4.5): does ``P(same)`` for the pairs of unseen
  grids get the labels right (accuracy), and is it honest about how sure it
  is (NLL, Brier, expected calibration error, reliability table)?
* **Attribute retrieval** (paper §4.3, Fig. 4): the model never sees which
  attribute a worker sorted by, so its dimensions come in arbitrary order;
  dims are matched to attributes by Hungarian assignment before scoring.
* **Noisy HITs**: does a per-HIT flag (``inference.hit_uncertainty``) pick
  out the submissions the simulator made noisy (precision, recall)?
* **Clustering of embeddings** (supplement F): K-means or a DP mixture on the
  learned embedding, scored against known classes with the multiclass MCC of
  eq. 9 (which is scikit-learn's ``matthews_corrcoef``), NMI and macro F1.

Inputs may be numpy arrays, lists or torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import f1_score, matthews_corrcoef, normalized_mutual_info_score, precision_score, recall_score
from sklearn.mixture import BayesianGaussianMixture

_EPS = 1e-12


def _to_numpy(x) -> np.ndarray:
    """numpy view of an array-like or a (possibly GPU, grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_pairs(labels, p_same) -> tuple[np.ndarray, np.ndarray]:
    y = _to_numpy(labels).astype(np.float64).ravel()
    p = _to_numpy(p_same).astype(np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and p_same differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size == 0:
        raise ValueError("no pairs to score")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0/1")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        # Most likely logits were passed instead of probabilities.
        raise ValueError("p_same must be probabilities in [0, 1]")
    return y, p


# ---------------------------------------------------------------------------
# Held-out pair prediction
# ---------------------------------------------------------------------------


def _bin_stats(y: np.ndarray, p: np.ndarray, n_bins: int) -> pd.DataFrame:
    # Equal-width bins [b/n, (b+1)/n); p = 1 goes into the last bin.
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    keep = count > 0
    b = np.arange(n_bins)[keep]
    return pd.DataFrame({
        "bin_lower": b / n_bins,
        "bin_upper": (b + 1) / n_bins,
        "mean_p": sum_p[keep] / count[keep],
        "frac_same": sum_y[keep] / count[keep],
        "count": count[keep],
    })


def reliability_table(labels, p_same, n_bins: int = 15) -> pd.DataFrame:
    """Per-bin mean ``P(same)`` against the observed share of "same" pairs.

    Equal-width bins ``[lower, upper)`` on ``P(same)`` (the last bin includes
    1); empty bins are dropped. Plot ``frac_same`` against ``mean_p`` for a
    reliability diagram; the diagonal is perfect calibration.
    """
    y, p = _check_pairs(labels, p_same)
    return _bin_stats(y, p, n_bins)


def expected_calibration_error(labels, p_same, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / n) |mean(y in b) - mean(p in b)| over equal-width bins.

    Binned on the positive-class probability ``P(same)`` rather than on the
    confidence ``max(p, 1-p)``: this is the quantity the reliability diagram
    shows, and it keeps "too sure they match" apart from "too sure they
    differ", which confidence binning folds together.
    """
    y, p = _check_pairs(labels, p_same)
    table = _bin_stats(y, p, n_bins)
    return float((table["count"] / y.size * (table["frac_same"] - table["mean_p"]).abs()).sum())


def pair_nll(labels, p_same) -> np.ndarray:
    """Each pair's binary cross-entropy in nats, float64, p clipped to ``[1e-12, 1 - 1e-12]``."""
    y, p = _check_pairs(labels, p_same)
    pc = np.clip(p, _EPS, 1.0 - _EPS)
    return -(y * np.log(pc) + (1.0 - y) * np.log1p(-pc))


def pair_scores(labels, p_same, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL, Brier and ECE of ``P(same)`` on labelled pairs.

    * ``accuracy``: predict "same" when ``p > 0.5`` (ties count as "different").
    * ``nll``: mean binary cross-entropy in nats, computed in float64 with p
      clipped to ``[1e-12, 1 - 1e-12]`` so one confident mistake gives a large
      but finite value.
    * ``brier``: mean ``(p - y)^2``.
    * ``ece``: :func:`expected_calibration_error` with ``n_bins`` bins.
    * ``base_rate``: share of "same" labels; ``majority_accuracy``: accuracy of
      always predicting the majority class of *these* labels. It uses the
      test labels, so it is a reference point, not a fair baseline.
    """
    y, p = _check_pairs(labels, p_same)
    base_rate = float(y.mean())
    return {
        "accuracy": float(((p > 0.5) == (y == 1.0)).mean()),
        "nll": float(pair_nll(y, p).mean()),
        "brier": float(((p - y) ** 2).mean()),
        "ece": expected_calibration_error(y, p, n_bins),
        "n_pairs": int(y.size),
        "base_rate": base_rate,
        "majority_accuracy": max(base_rate, 1.0 - base_rate),
    }


# ---------------------------------------------------------------------------
# Attribute retrieval (paper §4.3, Fig. 4)
# ---------------------------------------------------------------------------


@dataclass
class RetrievalResult:
    """Attribute-by-dimension confusion after Hungarian matching (paper Fig. 4)."""

    counts: pd.DataFrame  # rows attributes, columns dims 0..K-1 (raw or expected counts)
    confusion: pd.DataFrame  # row-normalised counts; matched dims first (attribute order), then the rest
    assignment: dict[str, int]  # attribute -> its matched dim (attributes left without a dim are absent)
    per_attribute_accuracy: pd.Series  # share of the attribute's HITs on its matched dim
    row_entropy: pd.Series  # -sum p log p of each confusion row, nats (Fig. 4b)
    mean_accuracy: float  # mean of per_attribute_accuracy (attributes with no HITs skipped)
    n_excluded: int = 0  # HITs left out: missing truth (e.g. noisy HITs) or an off-list attribute


def _has_truth(values: np.ndarray) -> np.ndarray:
    s = pd.Series(values, dtype=object)
    return (s.notna() & (s.astype(str).str.strip() != "")).to_numpy()


def attribute_retrieval(true_attribute, predicted, attributes=None, n_dims: int | None = None) -> RetrievalResult:
    """Which embedding dim does each true attribute land on, and how reliably?

    ``true_attribute`` holds the attribute each HIT was sorted by. HITs whose
    truth is missing (None, NaN or '' -- e.g. simulated noisy HITs, which
    follow no attribute) are excluded, as are HITs whose attribute is not in
    ``attributes`` (default: the sorted unique true values).

    ``predicted`` is either one predicted dim per HIT (argmax of the attribute
    activation, as in the paper) or an ``(n_hits, K)`` matrix of attribute
    probabilities; then ``counts`` are expected counts (column sums of the
    probabilities), which credits a model for uncertainty it admits.
    ``n_dims`` sets K for integer predictions (default ``max + 1``) so
    unused dims still appear as columns.

    The model's dims are unordered (any permutation fits equally well), so
    each attribute is matched to a distinct dim by Hungarian assignment
    maximising the matched counts. With fewer dims than attributes some
    attributes get no dim and score accuracy 0.
    """
    truth = _to_numpy(true_attribute).ravel()
    pred = _to_numpy(predicted)
    if pred.shape[0] != truth.shape[0]:
        raise ValueError(f"true_attribute and predicted differ in length: {truth.shape[0]} vs {pred.shape[0]}")
    has_truth = _has_truth(truth)
    if attributes is None:
        attributes = sorted({str(a) for a in truth[has_truth]})
    attributes = [str(a) for a in attributes]
    if len(set(attributes)) != len(attributes):
        raise ValueError("attributes must be distinct")
    truth_str = np.array([str(a) for a in truth], dtype=object)
    keep = has_truth & np.isin(truth_str, attributes)
    row = pd.Index(attributes).get_indexer(truth_str[keep])

    if pred.ndim == 1:
        if not np.issubdtype(pred.dtype, np.integer):
            if not np.array_equal(pred, np.round(pred)):
                raise ValueError("1-D predicted must hold integer dims")
            pred = pred.astype(np.int64)
        K = int(n_dims) if n_dims is not None else int(pred.max()) + 1 if pred.size else 0
        if pred.size and (pred.min() < 0 or pred.max() >= K):
            raise ValueError(f"predicted dims must lie in [0, {K})")
        counts = np.zeros((len(attributes), K))
        np.add.at(counts, (row, pred[keep]), 1.0)
    elif pred.ndim == 2:
        probs = pred.astype(np.float64)
        if n_dims is not None and n_dims != probs.shape[1]:
            raise ValueError(f"n_dims={n_dims} but predicted has {probs.shape[1]} columns")
        if (probs < 0).any() or not np.allclose(probs.sum(1), 1.0, atol=1e-3):
            raise ValueError("a 2-D predicted must hold probabilities whose rows sum to 1")
        K = probs.shape[1]
        counts = np.zeros((len(attributes), K))
        np.add.at(counts, row, probs[keep])
    else:
        raise ValueError("predicted must be 1-D (dims) or 2-D (probabilities)")

    # Hungarian assignment on raw counts: maximise the number of HITs that land
    # on their attribute's dim, each dim used by at most one attribute.
    rows, cols = linear_sum_assignment(counts, maximize=True)
    assignment = {attributes[r]: int(c) for r, c in zip(rows, cols)}

    total = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = counts / total[:, None]  # NaN rows for attributes with no HITs
    matched = np.zeros(len(attributes))
    for r, c in zip(rows, cols):
        matched[r] = normalised[r, c]
    matched[total == 0] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        plogp = np.where(normalised > 0, normalised * np.log(np.where(normalised > 0, normalised, 1.0)), 0.0)
    entropy = np.where(total > 0, 0.0 - plogp.sum(1), np.nan)  # 0.0 - x avoids -0.0

    order = [assignment[a] for a in attributes if a in assignment]
    order += [k for k in range(K) if k not in set(order)]
    index = pd.Index(attributes, name="attribute")
    columns = pd.Index(range(K), name="dim")
    counts_df = pd.DataFrame(counts, index=index, columns=columns)
    confusion = pd.DataFrame(normalised, index=index, columns=columns)[order]
    per_attribute = pd.Series(matched, index=index, name="accuracy")
    return RetrievalResult(
        counts=counts_df,
        confusion=confusion,
        assignment=assignment,
        per_attribute_accuracy=per_attribute,
        row_entropy=pd.Series(entropy, index=index, name="entropy"),
        mean_accuracy=float(per_attribute.mean()) if per_attribute.notna().any() else float("nan"),
        n_excluded=int((~keep).sum()),
    )


# ---------------------------------------------------------------------------
# Noisy HITs
# ---------------------------------------------------------------------------


def noisy_hit_recovery(flagged, noise_kind) -> dict:
    """Precision and recall of a per-HIT flag against the true noise kind ('none' = clean).

    Also the share of HITs flagged, the share truly noisy (the precision a
    random flag would get) and the share flagged within each kind, since
    kinds differ in how detectable they are (an off-list submission is a
    coherent grouping by an attribute the model was never told about).
    """
    flagged = _to_numpy(flagged).astype(bool).ravel()
    kind = pd.Series(_to_numpy(noise_kind).ravel(), dtype=object)
    if len(kind) != len(flagged):
        raise ValueError(f"flagged and noise_kind differ in length: {len(flagged)} vs {len(kind)}")
    noisy = (kind != "none").to_numpy()
    return {"precision": float(precision_score(noisy, flagged, zero_division=0.0)),
            "recall": float(recall_score(noisy, flagged, zero_division=0.0)),
            "flagged_share": float(flagged.mean()), "noisy_share": float(noisy.mean()),
            "flagged_share_by_kind": pd.Series(flagged).groupby(kind.to_numpy()).mean().to_dict()}


# ---------------------------------------------------------------------------
# Clustering of embeddings (supplement F)
# ---------------------------------------------------------------------------


def _unmatched_labels(classes: np.ndarray, n: int) -> list:
    """``n`` distinct labels that are not among ``classes``, of a compatible type."""
    if np.issubdtype(classes.dtype, np.number) and not np.issubdtype(classes.dtype, np.bool_):
        start = min(classes.min(), 0) - 1 if classes.size else -1
        return [start - i for i in range(n)]
    taken = {str(c) for c in classes}
    out, i = [], 0
    while len(out) < n:
        name = f"unmatched_{i}"
        if name not in taken:
            out.append(name)
        i += 1
    return out


def match_labels(true_labels, cluster_labels) -> np.ndarray:
    """Cluster ids mapped onto class labels by Hungarian matching.

    Cluster ids are arbitrary, so clusters must be paired with classes before
    any label-wise score (MCC, F1) means anything; the pairing maximises the
    number of agreeing items, one cluster per class. Clusters left unmatched
    (more clusters than classes) each get their own label that is never
    correct, so distinct clusters stay distinct and MCC is that of the full
    contingency table.
    """
    y = _to_numpy(true_labels).ravel()
    c = _to_numpy(cluster_labels).ravel()
    if y.shape != c.shape:
        raise ValueError(f"true_labels and cluster_labels differ in length: {y.shape[0]} vs {c.shape[0]}")
    classes, y_idx = np.unique(y, return_inverse=True)
    clusters, c_idx = np.unique(c, return_inverse=True)
    table = np.zeros((len(clusters), len(classes)))
    np.add.at(table, (c_idx, y_idx), 1.0)
    rows, cols = linear_sum_assignment(table, maximize=True)
    unmatched = [k for k in range(len(clusters)) if k not in set(rows.tolist())]
    target = np.empty(len(clusters), dtype=object)
    for r, col in zip(rows, cols):
        target[r] = classes[col]
    for k, label in zip(unmatched, _unmatched_labels(classes, len(unmatched))):
        target[k] = label
    mapped = target[c_idx]
    if np.issubdtype(classes.dtype, np.number) and not np.issubdtype(classes.dtype, np.bool_):
        return mapped.astype(classes.dtype)
    return mapped


def clustering_scores(true_labels, cluster_labels) -> dict[str, float]:
    """MCC, NMI and macro F1 of a clustering against known classes.

    * ``mcc``: scikit-learn's multiclass ``matthews_corrcoef`` on
      Hungarian-matched labels (:func:`match_labels`). This is Gorodkin's
      R_K, the paper's eq. 9; without the matching it would score an
      arbitrary relabelling of the clusters.
    * ``nmi``: normalised mutual information; invariant to relabelling, so it
      needs no matching.
    * ``f1``: macro F1 over the true classes on matched labels (items in
      unmatched clusters count as misses).
    """
    y = _to_numpy(true_labels).ravel()
    c = _to_numpy(cluster_labels).ravel()
    matched = match_labels(y, c)
    y_cmp = y.astype(object) if matched.dtype == object else y
    return {
        "mcc": float(matthews_corrcoef(y_cmp, matched)),
        "nmi": float(normalized_mutual_info_score(y, c)),
        "f1": float(f1_score(y_cmp, matched, labels=np.unique(y), average="macro", zero_division=0)),
    }


def cluster_embedding(X, n_clusters: int, method: str = "kmeans", seed: int = 0) -> np.ndarray:
    """Cluster labels of the rows of ``X`` (e.g. posterior-mean embeddings).

    ``kmeans``: K-means with 10 restarts, as in supplement F.
    ``dpgmm``: a truncated Dirichlet-process Gaussian mixture
    (variational, ``n_clusters`` is the truncation level), which may leave
    components empty and so chooses the number of clusters itself; its
    labels are renumbered 0..m-1 over the components actually used.
    """
    X = _to_numpy(X).astype(np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if method == "kmeans":
        return KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(X)
    if method == "dpgmm":
        mixture = BayesianGaussianMixture(
            n_components=n_clusters,
            weight_concentration_prior_type="dirichlet_process",
            max_iter=1000,
            random_state=seed,
        )
        labels = mixture.fit(X).predict(X)
        return np.unique(labels, return_inverse=True)[1].astype(np.int64)
    raise ValueError(f"method must be 'kmeans' or 'dpgmm', got {method!r}")
