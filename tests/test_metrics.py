"""Metrics on hand-worked examples."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import matthews_corrcoef

from cen_bayes.metrics import (
    attribute_retrieval,
    cluster_embedding,
    clustering_scores,
    expected_calibration_error,
    match_labels,
    pair_scores,
    reliability_table,
)

# ---------------------------------------------------------------------------
# Held-out pairs
# ---------------------------------------------------------------------------

P = [0.9, 0.2, 0.6, 0.4]
Y = [1, 0, 0, 1]


def test_pair_scores_hand_example():
    s = pair_scores(Y, P, n_bins=2)
    # predictions (p > 0.5): 1, 0, 1, 0 vs labels 1, 0, 0, 1 -> 2 of 4 right
    assert s["accuracy"] == pytest.approx(0.5)
    # Brier: (0.1^2 + 0.2^2 + 0.6^2 + 0.6^2) / 4 = (0.01 + 0.04 + 0.36 + 0.36) / 4 = 0.1925
    assert s["brier"] == pytest.approx(0.1925)
    # NLL: -(ln 0.9 + ln 0.8 + ln 0.4 + ln 0.4) / 4
    #    = (0.1053605 + 0.2231436 + 0.9162907 + 0.9162907) / 4 = 0.5402714
    assert s["nll"] == pytest.approx(0.5402714, abs=1e-6)
    # ECE, 2 bins: [0, .5) holds p = .2, .4 (y = 0, 1): |0.5 - 0.3| * 2/4 = 0.1
    #              [.5, 1] holds p = .9, .6 (y = 1, 0): |0.5 - 0.75| * 2/4 = 0.125
    assert s["ece"] == pytest.approx(0.225)
    assert s["n_pairs"] == 4
    assert s["base_rate"] == pytest.approx(0.5)
    assert s["majority_accuracy"] == pytest.approx(0.5)


def test_pair_scores_torch_inputs_and_majority():
    # 3 of 4 labels are "different" -> majority accuracy 0.75, base rate 0.25
    y = torch.tensor([0.0, 0.0, 0.0, 1.0])
    p = torch.tensor([0.1, 0.3, 0.7, 0.8], requires_grad=True)
    s = pair_scores(y, p)
    assert s["base_rate"] == pytest.approx(0.25)
    assert s["majority_accuracy"] == pytest.approx(0.75)
    assert s["accuracy"] == pytest.approx(0.75)  # only p = 0.7 (y = 0) is wrong


def test_nll_clipped_and_finite():
    # a certain and wrong prediction costs -ln(1e-12) = 27.63 nats, not inf
    s = pair_scores([1, 0], [0.0, 0.0])
    assert s["nll"] == pytest.approx(-math.log(1e-12) / 2, rel=1e-6)
    assert s["accuracy"] == pytest.approx(0.5)


def test_ece_and_reliability_table_agree():
    assert expected_calibration_error(Y, P, n_bins=2) == pytest.approx(0.225)
    table = reliability_table(Y, P, n_bins=2)
    assert list(table.columns) == ["bin_lower", "bin_upper", "mean_p", "frac_same", "count"]
    np.testing.assert_allclose(table["bin_lower"], [0.0, 0.5])
    np.testing.assert_allclose(table["mean_p"], [0.3, 0.75])
    np.testing.assert_allclose(table["frac_same"], [0.5, 0.5])
    assert table["count"].tolist() == [2, 2]


def test_reliability_table_drops_empty_bins_and_keeps_p_one():
    # 10 bins; p = 0.05 -> bin 0, p = 1.0 -> last bin [0.9, 1]; 8 empty bins dropped
    table = reliability_table([0, 1], [0.05, 1.0], n_bins=10)
    np.testing.assert_allclose(table["bin_lower"], [0.0, 0.9])
    np.testing.assert_allclose(table["bin_upper"], [0.1, 1.0])
    # ECE: |0 - 0.05| * 1/2 + |1 - 1| * 1/2 = 0.025
    assert expected_calibration_error([0, 1], [0.05, 1.0], n_bins=10) == pytest.approx(0.025)


def test_positive_class_ece_is_not_confidence_ece():
    # p = 0.2 for 10 pairs, 2 of them "same": P(same) is calibrated -> ECE 0.
    y = [1, 1] + [0] * 8
    assert expected_calibration_error(y, [0.2] * 10) == pytest.approx(0.0)


def test_pair_scores_rejects_logits():
    with pytest.raises(ValueError):
        pair_scores([0, 1], [-2.0, 3.0])


# ---------------------------------------------------------------------------
# Attribute retrieval
# ---------------------------------------------------------------------------

ATTRS = ["gaze", "gender", "skin"]  # sorted, as the default attribute order
# rows: true attribute, columns: predicted dim
COUNTS = np.array([
    [5, 4, 0],  # gaze
    [6, 0, 1],  # gender
    [0, 1, 3],  # skin
])


def hits_from_counts(counts, attrs):
    truth, pred = [], []
    for a, row in zip(attrs, counts):
        for k, n in enumerate(row):
            truth += [a] * int(n)
            pred += [k] * int(n)
    return np.array(truth, dtype=object), np.array(pred)


def test_retrieval_hungarian_not_identity():
    truth, pred = hits_from_counts(COUNTS, ATTRS)
    r = attribute_retrieval(truth, pred)
    # Row-wise argmax would send gaze and gender both to dim 0. Assignments:
    #   gaze->1, gender->0, skin->2: 4 + 6 + 3 = 13 (best)
    #   gaze->0, gender->2, skin->1: 5 + 1 + 1 = 7, ...
    assert r.assignment == {"gaze": 1, "gender": 0, "skin": 2}
    np.testing.assert_array_equal(r.counts.to_numpy(), COUNTS)
    assert list(r.counts.index) == ATTRS
    # accuracies 4/9, 6/7, 3/4; mean (4/9 + 6/7 + 3/4) / 3 = 517/756
    np.testing.assert_allclose(r.per_attribute_accuracy[ATTRS], [4 / 9, 6 / 7, 3 / 4])
    assert r.mean_accuracy == pytest.approx(517 / 756)
    # confusion columns: matched dims in attribute order (1, 0, 2); rows sum to 1
    assert list(r.confusion.columns) == [1, 0, 2]
    np.testing.assert_allclose(r.confusion.loc["gaze"], [4 / 9, 5 / 9, 0])
    np.testing.assert_allclose(np.diag(r.confusion.to_numpy()), [4 / 9, 6 / 7, 3 / 4])
    # entropy (nats): gaze   -(5/9 ln 5/9 + 4/9 ln 4/9) = 0.686962
    #                 gender -(6/7 ln 6/7 + 1/7 ln 1/7) = 0.410116
    #                 skin   -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.562335
    np.testing.assert_allclose(r.row_entropy[ATTRS], [0.686962, 0.410116, 0.562335], atol=1e-6)
    assert r.n_excluded == 0


def test_retrieval_extra_dims_and_n_dims():
    truth, pred = hits_from_counts(COUNTS, ATTRS)
    r = attribute_retrieval(truth, pred, n_dims=5)
    assert r.counts.shape == (3, 5)
    # unmatched dims follow in ascending order, all zero here
    assert list(r.confusion.columns) == [1, 0, 2, 3, 4]
    assert r.assignment == {"gaze": 1, "gender": 0, "skin": 2}


def test_retrieval_fewer_dims_than_attributes():
    # 2 dims, 3 attributes: gaze->0, skin->1 gives 5 + 3 = 8, the best; gender gets no dim
    counts = np.array([[5, 0], [2, 1], [0, 3]])
    truth, pred = hits_from_counts(counts, ATTRS)
    r = attribute_retrieval(truth, pred)
    assert r.assignment == {"gaze": 0, "skin": 1}
    np.testing.assert_allclose(r.per_attribute_accuracy[ATTRS], [1.0, 0.0, 1.0])
    assert r.mean_accuracy == pytest.approx(2 / 3)


def test_retrieval_probabilities_give_expected_counts():
    truth = ["a", "a", "b"]
    probs = torch.tensor([
        [0.7, 0.2, 0.1],
        [0.5, 0.4, 0.1],
        [0.1, 0.8, 0.1],
    ])
    r = attribute_retrieval(truth, probs)
    # expected counts: a = [0.7+0.5, 0.2+0.4, 0.1+0.1] = [1.2, 0.6, 0.2]; b = [0.1, 0.8, 0.1]
    np.testing.assert_allclose(r.counts.to_numpy(), [[1.2, 0.6, 0.2], [0.1, 0.8, 0.1]], atol=1e-6)
    assert r.assignment == {"a": 0, "b": 1}
    # accuracy a = 1.2 / 2 = 0.6, b = 0.8 / 1 = 0.8
    np.testing.assert_allclose(r.per_attribute_accuracy[["a", "b"]], [0.6, 0.8], atol=1e-6)
    assert list(r.confusion.columns) == [0, 1, 2]


def test_retrieval_rejects_unnormalised_scores():
    with pytest.raises(ValueError):
        attribute_retrieval(["a", "b"], np.array([[2.0, -1.0], [0.0, 1.0]]))


def test_retrieval_excludes_missing_truth_and_off_list():
    truth, pred = hits_from_counts(COUNTS, ATTRS)
    # noisy HITs (no truth) and an off-list attribute, all predicted on dim 2
    extra_truth = np.array([None, np.nan, "", "hair", "hair"], dtype=object)
    truth = np.concatenate([truth, extra_truth])
    pred = np.concatenate([pred, [2] * 5])
    r = attribute_retrieval(truth, pred, attributes=ATTRS)
    np.testing.assert_array_equal(r.counts.to_numpy(), COUNTS)
    assert r.n_excluded == 5
    assert r.mean_accuracy == pytest.approx(517 / 756)
    # without the list, 'hair' becomes a row of its own but missing truth stays out
    r_all = attribute_retrieval(truth, pred)
    assert list(r_all.counts.index) == ["gaze", "gender", "hair", "skin"]
    assert r_all.counts.loc["hair"].tolist() == [0, 0, 2]
    assert r_all.n_excluded == 3


# ---------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------


def mcc_eq9(C):
    """Paper supplement eq. 9 (Gorodkin's R_K), written out term by term."""
    C = np.asarray(C, dtype=float)
    N = C.shape[0]
    num = sum(C[k, k] * C[m, l] - C[l, k] * C[k, m] for k in range(N) for l in range(N) for m in range(N))
    den1 = sum(
        sum(C[l, k] for l in range(N)) * sum(C[g, f] for f in range(N) if f != k for g in range(N))
        for k in range(N)
    )
    den2 = sum(
        sum(C[k, l] for l in range(N)) * sum(C[f, g] for f in range(N) if f != k for g in range(N))
        for k in range(N)
    )
    return num / (math.sqrt(den1) * math.sqrt(den2))


def labels_from_confusion(C):
    """(true, predicted) label arrays whose confusion matrix (rows true) is C."""
    y, p = [], []
    for i, row in enumerate(C):
        for j, n in enumerate(row):
            y += [i] * n
            p += [j] * n
    return np.array(y), np.array(p)


def test_eq9_reduces_to_binary_mcc():
    # rows true, cols predicted: TN=3, FP=1, FN=2, TP=4
    # MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 10 / sqrt(5*6*4*5) = 0.4082483
    assert mcc_eq9([[3, 1], [2, 4]]) == pytest.approx(0.4082483, abs=1e-7)


def test_eq9_equals_sklearn_multiclass():
    C = [[5, 2, 1], [1, 6, 2], [0, 1, 4]]
    y, p = labels_from_confusion(C)
    expected = mcc_eq9(C)
    assert 0.3 < expected < 0.7  # non-trivial
    assert matthews_corrcoef(y, p) == pytest.approx(expected, abs=1e-12)
    assert mcc_eq9(np.transpose(C)) == pytest.approx(expected, abs=1e-12)
    # the same clustering under relabelled cluster ids: Hungarian undoes it
    relabel = np.array([7, 3, 5])
    assert clustering_scores(y, relabel[p])["mcc"] == pytest.approx(expected, abs=1e-12)


def test_more_clusters_than_classes_matches_eq9_on_padded_table():
    # 3 classes, 4 clusters: cluster 3 is unmatched
    C = np.array([[6, 1, 0, 2], [1, 5, 1, 0], [0, 1, 4, 2]])  # rows classes, cols clusters
    y, c = labels_from_confusion(C)
    mapped = match_labels(y, c)
    assert set(np.unique(mapped)) == {0, 1, 2, -1}  # cluster 3 -> label -1, never correct
    assert (mapped[c == 3] == -1).all()
    # eq. 9 on the square table: an all-zero row for the unmatched cluster's label
    padded = np.vstack([C, np.zeros(4, dtype=int)])
    assert clustering_scores(y, c)["mcc"] == pytest.approx(mcc_eq9(padded), abs=1e-12)


def test_match_labels_string_classes():
    y = np.array(["cat", "cat", "dog", "dog", "eel"])
    c = np.array([4, 4, 9, 9, 9])
    mapped = match_labels(y, c)
    assert mapped.tolist() == ["cat", "cat", "dog", "dog", "dog"]
    s = clustering_scores(y, c)
    # macro F1: cat 1, dog 2*(2/3*1)/(2/3+1) = 0.8, eel 0 -> 0.6
    assert s["f1"] == pytest.approx(0.6)


def test_permuted_clusters_score_one():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    c = np.array([2, 2, 2, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(match_labels(y, c), y)
    s = clustering_scores(y, c)
    assert s == pytest.approx({"mcc": 1.0, "nmi": 1.0, "f1": 1.0})
    s_str = clustering_scores(np.array(["a", "a", "b", "b"]), torch.tensor([1, 1, 0, 0]))
    assert s_str == pytest.approx({"mcc": 1.0, "nmi": 1.0, "f1": 1.0})


@pytest.mark.parametrize("method", ["kmeans", "dpgmm"])
def test_cluster_embedding_recovers_blobs(method):
    X, y = make_blobs(n_samples=150, centers=[[0, 0], [10, 0], [0, 10]], cluster_std=0.5, random_state=0)
    labels = cluster_embedding(torch.tensor(X, dtype=torch.float32), 3, method=method, seed=0)
    assert labels.shape == (150,)
    assert clustering_scores(y, labels) == pytest.approx({"mcc": 1.0, "nmi": 1.0, "f1": 1.0})


def test_cluster_embedding_unknown_method():
    with pytest.raises(ValueError):
        cluster_embedding(np.zeros((4, 2)), 2, method="spectral")
