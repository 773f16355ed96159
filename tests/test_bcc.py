"""Bayesian Crowd Clustering (models/baselines/bcc.py) on the simulated ``tiny`` crowd."""

import numpy as np
import pyro
import pytest
import torch

from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from cen_bayes.metrics import pair_scores
from cen_bayes.splits import split_by_grid
from models.baselines.bcc import BayesianCrowdClustering

K, STEPS = 4, 150


@pytest.fixture(scope="module")
def crowd():
    data = CrowdData.from_source(load_dataset("tiny", seed=0).table)
    return data, split_by_grid(data, 0.15, seed=0)


def fit(data, split, seed=0, **kw):
    return BayesianCrowdClustering(K, steps=STEPS, draws=30, seed=seed, progress=False, **kw).fit(data, split)


@pytest.fixture(scope="module")
def model(crowd):
    return fit(*crowd)


def test_held_out_accuracy_beats_majority(crowd, model):
    data, split = crowd
    _, test = split.pair_masks(data)
    p = model.predict_proba(data, data.pairs.subset(test))
    assert p.dtype == np.float64 and p.shape == (int(test.sum()),)
    assert ((p >= 0) & (p <= 1)).all()
    scores = pair_scores(data.pairs.label[test].numpy(), p)
    assert scores["accuracy"] > scores["majority_accuracy"] + 0.15, scores  # measured 0.82 against 0.56
    assert scores["nll"] < np.log(2), scores


def test_fitted_attributes(crowd, model):
    data, _ = crowd
    assert model.embedding_.shape == model.embedding_sd_.shape == (data.n_images, K)
    assert (model.embedding_sd_ > 0).all() and np.isfinite(model.embedding_).all()
    assert len(model.loss_history_) == STEPS and model.fit_seconds_ > 0
    assert np.mean(model.loss_history_[-10:]) < 0.6 * np.mean(model.loss_history_[:10])
    labels = model.cluster(3)
    assert labels.shape == (data.n_images,) and len(np.unique(labels)) == 3


def test_symmetric_in_the_two_images(crowd, model):
    data, _ = crowd
    pairs = data.pairs.subset(slice(0, 200))
    swapped = data.pairs.subset(slice(0, 200))
    swapped.i, swapped.j = pairs.j, pairs.i
    np.testing.assert_allclose(model.predict_proba(data, swapped), model.predict_proba(data, pairs), atol=1e-6)


def test_same_seed_same_predictions_other_seed_differs(crowd, model):
    data, split = crowd
    _, test = split.pair_masks(data)
    pairs = data.pairs.subset(test)
    again = fit(data, split, seed=0)
    torch.manual_seed(123)  # predictions draw from their own seed, not from the global RNG's state
    first = model.predict_proba(data, pairs)
    state = torch.get_rng_state()
    np.testing.assert_array_equal(again.predict_proba(data, pairs), first)
    assert torch.equal(torch.get_rng_state(), state)  # and leave the global RNG as it was
    torch.manual_seed(456)
    np.testing.assert_array_equal(model.predict_proba(data, pairs), first)
    other = fit(data, split, seed=1)
    assert not np.allclose(other.predict_proba(data, pairs), model.predict_proba(data, pairs))


def test_minibatch_fit_learns(crowd):
    data, split = crowd
    _, test = split.pair_masks(data)
    m = fit(data, split, batch_size=1000)
    scores = pair_scores(data.pairs.label[test].numpy(), m.predict_proba(data, data.pairs.subset(test)))
    assert scores["accuracy"] > scores["majority_accuracy"] + 0.1, scores  # measured 0.79


def test_does_not_clash_with_other_pyro_params(crowd, model):
    """Its parameters live in their own param-store scope: other Pyro fits don't see or change them."""
    data, split = crowd
    _, test = split.pair_masks(data)
    pairs = data.pairs.subset(test)
    before = model.predict_proba(data, pairs)
    pyro.clear_param_store()
    pyro.param("AutoNormal.locs.x", torch.zeros(3))  # a foreign guide's parameter of the same name
    np.testing.assert_array_equal(model.predict_proba(data, pairs), before)
    assert pyro.get_param_store()["AutoNormal.locs.x"].shape == (3,)
    pyro.clear_param_store()


def test_stopped_fit_resumes_to_the_uninterrupted_result(crowd, tmp_path, monkeypatch):
    """BCC trains with the CEN's SVI loop (models.svi_trainer): stopped by SIGTERM mid-fit, it keeps a
    checkpoint, and resuming from it ends where an uninterrupted fit does, minibatch order included."""
    import os
    import signal

    from pyro.infer import SVI

    data, split = crowd
    options = dict(steps=30, batch_size=500, draws=5, seed=3, progress=False)
    uninterrupted = BayesianCrowdClustering(K, **options).fit(data, split)
    original, calls = SVI.step, []

    def step(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 11:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss
    checkpoint = tmp_path / "bcc.pt"
    with monkeypatch.context() as patch:
        patch.setattr(SVI, "step", step)
        stopped = BayesianCrowdClustering(K, checkpoint=checkpoint, **options).fit(data, split)
    assert stopped.interrupted_ and len(stopped.loss_history_) == 11
    resumed = BayesianCrowdClustering(K, checkpoint=checkpoint, resume=True, **options).fit(data, split)
    assert not resumed.interrupted_ and resumed.loss_history_ == uninterrupted.loss_history_
    np.testing.assert_array_equal(resumed.embedding_, uninterrupted.embedding_)
