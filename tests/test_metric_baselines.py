"""Siamese, triplet and CSN-oracle baselines (models/baselines: siamese.py, triplet.py, csn.py, triplet_sampling.py) on the tiny crowd."""

import numpy as np
import pandas as pd
import pytest
import torch

from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from cen_bayes.metrics import pair_scores
from cen_bayes.splits import split_by_grid
from cen_bayes.datasets import true_hits
from models.baselines.csn import CSNOracle
from models.baselines.siamese import Siamese
from models.baselines.triplet import Triplet
from models.baselines.triplet_sampling import sample_triplets, triplet_loss

K = 4


@pytest.fixture(scope="module")
def crowd():
    """'tiny': 10 workers with strong, different attribute priors sort 120 grids by shape, colour or size."""
    sim = load_dataset("tiny", seed=0)
    data = CrowdData.from_source(sim.table)
    split = split_by_grid(data, 0.15, seed=0)
    test = data.pairs.subset(split.pair_masks(data)[1])
    return data, split, test, true_hits(sim, data)["attribute"].to_numpy()


def make(name, attribute, **kwargs):
    kwargs = {"progress": False, **kwargs}
    if name == "csn":
        return CSNOracle(attribute, K, **kwargs)
    return {"siamese": Siamese, "triplet": Triplet}[name](K, **kwargs)


@pytest.fixture(scope="module")
def fitted(crowd):
    data, split, test, attribute = crowd
    return {name: make(name, attribute).fit(data, split) for name in ("siamese", "triplet", "csn")}


def pair_label_lookup(data):
    """Sorted keys (hit, min image, max image) of every pair and their labels."""
    p, n = data.pairs, data.n_images
    key = (p.hit * n + torch.minimum(p.i, p.j)) * n + torch.maximum(p.i, p.j)
    key, order = key.sort()
    return key, p.label[order], n


def labels_of(lookup, hit, a, b):
    """Label of (a, b) in HIT ``hit``; asserts the pair exists there (so both images are in that HIT)."""
    key, label, n = lookup
    query = (hit * n + torch.minimum(a, b)) * n + torch.maximum(a, b)
    pos = torch.searchsorted(key, query).clamp_max(len(key) - 1)
    assert torch.equal(key[pos], query), "a triplet mixes images from different HITs"
    return label[pos]


def test_sampled_triplets_come_from_one_hit_with_the_right_groups(crowd):
    data, split, _, _ = crowd
    train = data.pairs.subset(split.pair_masks(data)[0])
    triplets = sample_triplets(train, n_negatives=2, seed=3)
    lookup = pair_label_lookup(data)
    assert torch.all(labels_of(lookup, triplets.hit, triplets.anchor, triplets.positive) == 1)
    assert torch.all(labels_of(lookup, triplets.hit, triplets.anchor, triplets.negative) == 0)
    assert torch.all(torch.from_numpy(split.train_hits)[triplets.hit])
    # one triplet per ordered positive pair and negative draw, unless the anchor has no negative in its HIT
    hit, a = torch.cat([train.hit, train.hit]), torch.cat([train.i, train.j])
    same = torch.cat([train.label, train.label]) == 1
    has_negative = set(zip(hit[~same].tolist(), a[~same].tolist()))
    expected = sum((h, x) in has_negative for h, x in zip(hit[same].tolist(), a[same].tolist()))
    assert expected < int(same.sum()), "tiny should contain one-group HITs whose positives give no triplet"
    assert len(triplets) == 2 * expected


def test_triplet_sampling_is_seeded(crowd):
    data, split, _, _ = crowd
    train = data.pairs.subset(split.pair_masks(data)[0])
    first, again, other = (sample_triplets(train, seed=s) for s in (0, 0, 1))
    assert torch.equal(first.negative, again.negative)
    assert not torch.equal(first.negative, other.negative)
    assert torch.equal(first.anchor, other.anchor) and torch.equal(first.positive, other.positive)


def test_triplet_loss_by_hand():
    x_a, x_p, x_n = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # unmasked: [3 − 1 + 0.2]₊ = 2.2, norms (0 + 3 + 1)/3
    assert triplet_loss(x_a, x_p, x_n, 0.2, 0.3).item() == pytest.approx(2.2 + 0.3 * 4 / 3)
    # a mask that hides dim 0 makes p identical to a: [0 − 1 + 0.2]₊ = 0
    mask = torch.tensor([[0.0, 1.0]])
    assert triplet_loss(x_a, x_p, x_n, 0.2, 0.0, mask).item() == pytest.approx(0.0)


@pytest.mark.parametrize("name", ["siamese", "triplet", "csn"])
def test_beats_majority_on_held_out_pairs(crowd, fitted, name):
    data, _, test, _ = crowd
    scores = pair_scores(test.label, fitted[name].predict_proba(data, test))
    assert scores["accuracy"] > scores["majority_accuracy"] + 0.1, scores


def test_csn_oracle_beats_attribute_blind_baselines(crowd, fitted):
    """Tiny's workers sort by different attributes; knowing which one should help a lot."""
    data, _, test, _ = crowd
    accuracy = {name: pair_scores(test.label, m.predict_proba(data, test))["accuracy"] for name, m in fitted.items()}
    assert accuracy["csn"] > max(accuracy["siamese"], accuracy["triplet"]) + 0.05, accuracy


@pytest.mark.parametrize("name", ["siamese", "triplet", "csn"])
def test_fitted_outputs_and_decision_rule(crowd, fitted, name):
    data, _, test, _ = crowd
    model = fitted[name]
    proba, label, d = model.predict_proba(data, test), model.predict(data, test), model.distance(data, test)
    assert proba.dtype == np.float64 and proba.shape == (len(test),) and np.all((proba >= 0) & (proba <= 1))
    assert model.slope_ > 0, "P(same) must fall with distance"
    np.testing.assert_array_equal(label, (d.astype(np.float64) < model.intercept_ / model.slope_).astype(np.int64))
    if name == "siamese":  # the calibrated threshold is the loss's own ξ_n/2
        assert model.intercept_ / model.slope_ == pytest.approx(model.xi_n / 2)
    assert model.embedding_.shape == (data.n_images, K) and np.isfinite(model.embedding_).all()
    assert len(model.loss_history_) == 20 and model.loss_history_[-1] < model.loss_history_[0]
    assert model.fit_seconds_ > 0 and model.hit_attribute_probabilities(data, [0, 1]) is None


def test_csn_conditions_and_masks(crowd, fitted):
    data, _, _, attribute = crowd
    model = fitted["csn"]
    names = sorted(set(attribute[pd.notna(attribute)]))  # noisy HITs are NaN
    assert model.conditions_ == [*names, None]
    assert model.masks_.shape == (len(names) + 1, K) and np.all(model.masks_ >= 0)
    # each attribute's mask puts its weight on a different dimension
    assert len({int(np.argmax(m)) for m in model.masks_[:-1]}) == len(names)
    with pytest.raises(ValueError, match="hit_attribute"):
        CSNOracle(attribute[:-1], K, progress=False).fit(data, split_by_grid(data, 0.15, seed=0))


@pytest.mark.parametrize("name", ["siamese", "csn"])
def test_same_seed_same_predictions(crowd, name):
    data, split, test, attribute = crowd
    runs = [make(name, attribute, epochs=3, seed=s).fit(data, split).predict_proba(data, test) for s in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
