"""The Bayes-optimal reference: a probability, calibrated against the labels the simulator drew,
better than the simple references, and usable as a benchmark row."""

import numpy as np
import pytest

from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from cen_bayes.limit import bayes_limit, world_of
from cen_bayes.metrics import pair_scores
from cen_bayes.splits import split_by_grid

# small versions of two datasets: tiny (attribute sorting) and categories (sorting by kind)
SMALL = {"tiny": {}, "categories": {"n_grids": 40}}


def limit_of(name, seed, n_draws=300, held_out=False):
    sim = load_dataset(name, seed=seed, **SMALL[name])
    data = CrowdData.from_source(sim.table, name=name)
    pairs = data.pairs
    if held_out:
        pairs = pairs.subset(split_by_grid(data, 0.15, seed=seed).pair_masks(data)[1])
    return sim, data, pairs, bayes_limit(sim, data, pairs, n_draws=n_draws, seed=seed)


def test_limit_is_a_reproducible_probability():
    sim, data, pairs, p = limit_of("tiny", 0, n_draws=200)
    assert p.dtype == np.float64 and p.shape == (len(pairs),)
    assert (p >= 0.5 / 200).all() and (p <= 1 - 0.5 / 200).all()  # clipped by half a Monte Carlo step
    assert np.array_equal(p, bayes_limit(sim, data, pairs, n_draws=200, seed=0))
    other = bayes_limit(sim, data, pairs, n_draws=200, seed=1)
    assert not np.array_equal(p, other) and np.abs(p - other).mean() < 0.05  # Monte Carlo noise only
    subset = pairs.subset(np.arange(0, len(pairs), 7))
    assert np.abs(bayes_limit(sim, data, subset, n_draws=200, seed=3) - p[::7]).mean() < 0.05


@pytest.fixture(scope="module")
def pooled():
    """Labels, limits and HIT of every pair of several seeds of each small dataset."""
    out = {}
    for name, n_seeds in (("tiny", 8), ("categories", 4)):
        runs = [limit_of(name, seed) for seed in range(n_seeds)]
        out[name] = tuple(np.concatenate(parts) for parts in zip(
            *[(r[2].label.numpy(), r[3], r[2].hit.numpy() + 1_000_000 * seed) for seed, r in enumerate(runs)]))
    return out


def calibration_z(y, p, hit, n_bins=10, min_hits=100):
    """Per bin of P(same): (observed - predicted number of "same") / its standard error.

    Pairs of one HIT share its draws (which attribute, which noise), so they
    are not independent: the standard error is the cluster-robust one, from
    each HIT's summed residual. Bins with fewer than ``min_hits`` HITs are
    skipped. Calibrated predictions give roughly standard normal z.
    """
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    z = []
    for b in range(n_bins):
        m = bins == b
        hits, inverse = np.unique(hit[m], return_inverse=True)
        if len(hits) >= min_hits:
            residual = np.bincount(inverse, weights=y[m] - p[m])
            z.append(residual.sum() / np.sqrt((residual ** 2).sum()))
    return np.array(z)


@pytest.mark.parametrize("name", ["tiny", "categories"])
def test_limit_is_calibrated(pooled, name):
    """Among pairs binned by the limit's P(same), the share labelled "same" is P(same):
    every bin within 3.5 cluster-robust standard errors, pooled over several seeds (hundreds of
    HITs). The check has power: a limit pulled a quarter of the way to 0.5, or raised by 0.03,
    fails it."""
    y, p, hit = pooled[name]
    z = calibration_z(y, p, hit)
    assert len(z) >= 8 and np.abs(z).max() < 3.5, (name, z.round(2))
    assert pair_scores(y, p)["ece"] < 0.02
    assert np.abs(calibration_z(y, 0.5 + 0.75 * (p - 0.5), hit)).max() > 6
    assert np.abs(calibration_z(y, np.minimum(p + 0.03, 1.0), hit)).max() > 3.5


@pytest.mark.parametrize("name", list(SMALL))
def test_limit_beats_the_simple_references(name):
    """On held-out pairs of several seeds: better than always "different" and than the best constant."""
    for seed in range(3):
        sim, data, pairs, p = limit_of(name, seed, held_out=True)
        y = pairs.label.numpy()
        scores = pair_scores(y, p)
        base = y.mean()  # the best constant, told the held-out base rate
        constant_nll = -(base * np.log(base) + (1 - base) * np.log(1 - base))
        assert scores["accuracy"] > max(scores["majority_accuracy"], (y == 0).mean()) + 0.05
        assert scores["nll"] < constant_nll - 0.1
        assert scores["brier"] < base * (1 - base)


def test_noise_allocation_is_order_sampling():
    """numpy's weighted choice without replacement (the simulator's noise allocation) picks each item
    as often as the exponential-clock order sampling the limit uses."""
    weights = np.linspace(0.02, 1.0, 25) ** 2
    n, reps = 6, 6000
    rng = np.random.default_rng(0)
    by_choice = np.zeros(len(weights))
    for _ in range(reps):
        by_choice[rng.choice(len(weights), n, replace=False, p=weights / weights.sum())] += 1
    clocks = rng.exponential(size=(reps, len(weights))) / weights
    by_clocks = (clocks <= np.partition(clocks, n - 1, axis=1)[:, [n - 1]]).sum(axis=0)
    assert (by_clocks.sum(), by_choice.sum()) == (n * reps, n * reps)
    # inclusion is far from proportional to weight (so the check can tell the two apart) ...
    proportional = np.minimum(n * weights / weights.sum(), 1)
    assert np.abs(by_choice / reps - proportional).max() > 0.1
    # ... but the two samplers agree within Monte Carlo error
    assert np.abs(by_choice - by_clocks).max() / reps < 4 * np.sqrt(0.25 * 2 / reps)


def test_world_is_rebuilt_from_the_ground_truth():
    sim = load_dataset("categories", seed=1, n_grids=30)
    world, hit_worker, hit_grid = world_of(sim)
    shown = sim.image_attributes.index.to_numpy()[world.grid_images[hit_grid]]
    assert (shown.ravel() == sim.table.image_id.to_numpy()).all()
    assert (sim.worker_bias.index[hit_worker] == sim.hits.worker_id).all()
    assert world.tree.twins.shape == (10, 2) and (world.tree.image_category == sim.image_attributes.category).all()


def test_unknown_hits_are_refused():
    sim, data, pairs, _ = limit_of("tiny", 0, n_draws=10)
    other = load_dataset("tiny", seed=0, n_grids=20)
    with pytest.raises(ValueError, match="not in the simulation"):
        bayes_limit(other, data, pairs.subset(np.arange(len(pairs) - 50, len(pairs))), n_draws=10)


def test_limit_is_a_benchmark_row():
    from benchmarks.runner import Job, run_job

    row = run_job(Job("tiny", 0, "limit", smoke=True))
    assert row["method"] == "limit" and np.isnan(row["train_accuracy"]) and row["retrieval_json"] == ""
    assert 0.5 < row["accuracy"] <= 1 and np.isfinite(row["nll"]) and row["fit_seconds"] < 30
    assert np.isfinite(row["kmeans_mcc"])  # clustering of the true latents
