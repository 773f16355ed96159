"""Pair expansion and grid splits."""

import numpy as np
import pandas as pd
import pytest
import torch

from cen_bayes.crowd import CrowdData
from cen_bayes.splits import split_by_grid, training_fraction


def small_table():
    # worker a sorts grid 1 (4 images) into {p,q},{r},{s}; worker b sorts the
    # same grid into one group but skips image s; worker a sorts grid 2 (3 images).
    rows = [
        ("a", 1, "p", "x"), ("a", 1, "q", "x"), ("a", 1, "r", "y"), ("a", 1, "s", "z"),
        ("b", 1, "p", "g"), ("b", 1, "q", "g"), ("b", 1, "r", "g"),
        ("a", 2, "s", "x"), ("a", 2, "t", "y"), ("a", 2, "u", "x"),
    ]
    return pd.DataFrame(rows, columns=["worker_id", "grid_id", "image_id", "group"])


def pair_set(data):
    p = data.pairs
    return {
        (data.workers[w], data.grids[g], frozenset((data.images[i], data.images[j])), int(l))
        for w, g, i, j, l in zip(p.worker.tolist(), p.grid.tolist(), p.i.tolist(), p.j.tolist(), p.label.tolist())
    }


def test_pairs_counts_and_labels():
    data = CrowdData.from_source(small_table())
    assert (data.n_workers, data.n_grids, data.n_images, data.n_hits) == (2, 2, 6, 3)
    assert len(data.pairs) == 6 + 3 + 3  # (S^2 - S)/2 per HIT
    pairs = pair_set(data)
    assert len(pairs) == 12
    assert ("a", 1, frozenset("pq"), 1) in pairs and ("a", 1, frozenset("pr"), 0) in pairs
    assert ("b", 1, frozenset("pr"), 1) in pairs
    assert ("a", 2, frozenset("su"), 1) in pairs and ("a", 2, frozenset("st"), 0) in pairs


def test_pairs_match_brute_force_on_random_table():
    rng = np.random.default_rng(1)
    rows = []
    for grid in range(15):
        images = rng.choice(40, size=rng.integers(2, 9), replace=False)
        for worker in rng.choice(6, size=rng.integers(1, 3), replace=False):
            groups = rng.integers(0, 3, size=len(images))
            rows += [(f"w{worker}", f"g{grid}", f"i{im}", int(gr)) for im, gr in zip(images, groups)]
    table = pd.DataFrame(rows, columns=["worker_id", "grid_id", "image_id", "group"])
    data = CrowdData.from_source(table)
    expected = set()
    for (w, g), hit in table.groupby(["worker_id", "grid_id"]):
        recs = list(hit.itertuples())
        for a in range(len(recs)):
            for b in range(a + 1, len(recs)):
                expected.add((w, g, frozenset((recs[a].image_id, recs[b].image_id)), int(recs[a].group == recs[b].group)))
    assert pair_set(data) == expected
    assert len(data.pairs) == len(expected)
    assert bool((data.pairs.i != data.pairs.j).all())
    # pair codes agree with the HIT table
    assert torch.equal(data.pairs.worker, torch.tensor(data.hits.worker.to_numpy())[data.pairs.hit])


def test_grid_image_sets_are_unions():
    data = CrowdData.from_source(small_table())
    g1 = data.grids.get_loc(1)
    members = data.grid_image[data.grid_ptr[g1]: data.grid_ptr[g1 + 1]]
    assert sorted(data.images[members.numpy()]) == ["p", "q", "r", "s"]
    onehot = data.grid_onehot()
    assert onehot.shape == (2, 6) and onehot.sum().item() == 7


def test_split_holds_out_whole_grids():
    rows = [(f"w{g % 5}", f"g{g}", f"i{(g + k) % 30}", k % 2) for g in range(100) for k in range(6)]
    data = CrowdData.from_source(pd.DataFrame(rows, columns=["worker_id", "grid_id", "image_id", "group"]))
    split = split_by_grid(data, holdout_frac=0.15, seed=3)
    train_grids = set(data.hits.grid[split.train_hits])
    test_grids = set(data.hits.grid[split.test_hits])
    assert len(test_grids) == 15 and not train_grids & test_grids
    train, test = split.pair_masks(data)
    assert not bool((train & test).any()) and bool((train | test).all())
    assert set(data.pairs.grid[test].tolist()) == test_grids
    again = split_by_grid(data, holdout_frac=0.15, seed=3)
    assert np.array_equal(again.test_hits, split.test_hits)
    assert not np.array_equal(split_by_grid(data, 0.15, seed=4).test_hits, split.test_hits)


def test_training_fractions_are_nested():
    rows = [(f"w{g % 5}", f"g{g}", f"i{(g + k) % 30}", k % 2) for g in range(100) for k in range(6)]
    data = CrowdData.from_source(pd.DataFrame(rows, columns=["worker_id", "grid_id", "image_id", "group"]))
    split = split_by_grid(data, seed=0)
    small, large = (training_fraction(data, split, f, seed=1) for f in (0.25, 0.5))
    assert small.train_hits.sum() == round(0.25 * 85) and large.train_hits.sum() == round(0.5 * 85)
    assert not (small.train_hits & ~large.train_hits).any()
    assert np.array_equal(small.test_hits, split.test_hits)
    assert list(np.unique(small.labels())) == ["test", "train", "unused"]
    with pytest.raises(ValueError):
        training_fraction(data, split, 0.0)
