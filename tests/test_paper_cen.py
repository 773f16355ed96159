"""The paper-recipe CEN point estimate (models/baselines/paper_cen.py) on a tiny synthetic crowd."""

import numpy as np
import pandas as pd
import pytest
import torch

from cen_bayes.crowd import CrowdData
from cen_bayes.splits import split_by_grid
from models.baselines.paper_cen import VARIANTS, PaperCEN
from models.encoders import padded_grid_sets
from models.baselines.point_training import train_minibatch

N_IMAGES, N_WORKERS, N_GRIDS, GRID_SIZE = 40, 8, 80, 8


def synthetic_crowd(seed: int = 0) -> CrowdData:
    """40 images with 2 balanced binary attributes; worker w always sorts by attribute w % 2.

    Each of the 80 grids shows 8 random images to one worker (one HIT per grid),
    who puts the images into two groups by the value of their attribute.
    """
    rng = np.random.default_rng(seed)
    image = np.arange(N_IMAGES)
    attributes = np.stack([image % 2, (image // 2) % 2], axis=1)
    rows = []
    for grid in range(N_GRIDS):
        worker = grid % N_WORKERS
        for im in rng.choice(N_IMAGES, size=GRID_SIZE, replace=False):
            rows.append((f"w{worker}", f"g{grid}", f"img{im}", int(attributes[im, worker % 2])))
    return CrowdData.from_source(pd.DataFrame(rows, columns=["worker_id", "grid_id", "image_id", "group"]))


@pytest.fixture(scope="module")
def crowd():
    data = synthetic_crowd()
    return data, split_by_grid(data, holdout_frac=0.25, seed=0)


def fit(data, split, variant, epochs, seed=0):
    return PaperCEN(variant, K=4, epochs=epochs, seed=seed, progress=False).fit(data, split)


@pytest.fixture(scope="module")
def worker_model(crowd):
    data, split = crowd
    return fit(data, split, "worker", epochs=25)


def test_padded_grid_sets_hold_each_grid_image_set(crowd):
    data, _ = crowd
    sets = padded_grid_sets(data)
    assert sets.shape == (N_GRIDS, GRID_SIZE)
    for g in (0, 17, N_GRIDS - 1):
        assert sorted(sets[g].tolist()) == sorted(data.grid_image[data.grid_ptr[g]:data.grid_ptr[g + 1]].tolist())


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_probabilities_and_rule(crowd, variant):
    data, split = crowd
    model = fit(data, split, variant, epochs=3)
    _, test_mask = split.pair_masks(data)
    test = data.pairs.subset(test_mask)
    proba, label = model.predict_proba(data, test), model.predict(data, test)
    assert proba.shape == label.shape == (len(test),)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_array_equal(label, (proba > 0.5).astype(label.dtype))
    np.testing.assert_array_equal(label, (model.distance(data, test) < 3.5).astype(label.dtype))
    assert model.scale_ > 0
    assert model.embedding_.shape == (data.n_images, 4)
    assert len(model.loss_history_) == 3 and model.fit_seconds_ > 0
    if variant == "context":
        assert model.worker_activation_ is None
    else:
        assert model.worker_activation_.shape == (data.n_workers, 4)
        assert np.all(model.worker_activation_ >= 0)
    if variant == "worker":
        assert model.grid_activation_ is None
    else:
        assert model.grid_activation_.shape == (data.n_grids, 4)
        assert np.all(model.grid_activation_ >= 0)
    acts = model.hit_activations(data, np.arange(data.n_hits))
    assert acts.shape == (data.n_hits, 4) and np.all(acts >= 0)
    np.testing.assert_array_equal(model.hit_activations(data, split.test_hits), acts[split.test_hits])


def test_batch_loss_is_eq8_by_hand(crowd):
    data, split = crowd
    model = fit(data, split, "mixture", epochs=2)
    batch = data.pairs.subset(slice(0, 100))
    x = model.embedding_.astype(np.float64)
    a = model.hit_activations(data, batch.hit.numpy()).astype(np.float64)
    np.testing.assert_allclose(a, model.worker_activation_[batch.worker.numpy()]
                               + model.grid_activation_[batch.grid.numpy()], rtol=1e-5, atol=1e-6)
    i, j, l = batch.i.numpy(), batch.j.numpy(), batch.label.numpy().astype(np.float64)
    d = np.sqrt(((a * (x[i] - x[j])) ** 2).sum(1))
    gamma, xi_p, xi_n, lam1, lam2 = 5.0, 1.0, 6.0, 5e-6, 1e-3
    per_pair = (gamma * l * np.maximum(0, d - xi_p) + (1 - l) * np.maximum(0, xi_n - d)
                + lam1 * np.abs(a).sum(1) + lam2 * np.linalg.norm(x[i], axis=1) + lam2 * np.linalg.norm(x[j], axis=1))
    with torch.no_grad():
        got = model.loss(data, batch).item()
    assert got == pytest.approx(per_pair.mean(), rel=1e-5)
    np.testing.assert_allclose(model.distance(data, batch), d, rtol=1e-5, atol=1e-6)


def test_worker_variant_beats_majority_on_held_out_grids(crowd, worker_model):
    data, split = crowd
    _, test_mask = split.pair_masks(data)
    test = data.pairs.subset(test_mask)
    y = test.label.numpy()
    majority = max(y.mean(), 1 - y.mean())
    accuracy = (worker_model.predict(data, test) == y).mean()
    assert accuracy > majority + 0.2, (accuracy, majority)
    assert worker_model.loss_history_[-1] < worker_model.loss_history_[0]


def test_same_seed_same_predictions(crowd, worker_model):
    data, split = crowd
    again = fit(data, split, "worker", epochs=25)
    np.testing.assert_array_equal(again.predict_proba(data, data.pairs), worker_model.predict_proba(data, data.pairs))
    np.testing.assert_array_equal(again.embedding_, worker_model.embedding_)
    other = fit(data, split, "worker", epochs=2, seed=1)
    assert not np.array_equal(other.embedding_, worker_model.embedding_)


def test_train_minibatch_generic_loop(crowd):
    data, _ = crowd
    torch.manual_seed(0)
    scale = torch.nn.Parameter(torch.tensor(3.0))
    module = torch.nn.Module()
    module.scale = scale
    history = train_minibatch(module, lambda b: ((scale - b.label) ** 2).mean(), data.pairs,
                              epochs=5, batch_size=64, lr=0.1, seed=0, progress=False)
    assert len(history) == 5 and history[-1] < history[0]
    assert abs(scale.item() - data.pairs.label.mean().item()) < 0.2
