"""A fitted CEN's posterior as ArviZ InferenceData (``posterior.nc`` of a run).

Groups and dims, all named by the user's own ids:

* posterior: ``x`` (image, attribute); ``a_w`` (worker, attribute) and
  ``worker_share`` = a_w / Σ_k a_w (what the likelihood sees of a worker's
  bias: the choice variant uses only ratios, so a_w's own scale drifts, on
  retina so far towards 0 that ``az.summary`` of a_w rounds it to 0, as
  measured in benchmarks/README.md, "Measurements behind the defaults"); ``a_g``
  (grid, attribute; unseen grids drawn from their context prior); ``tau``
  (attribute); ``alpha`` (how alike workers' biases are: a^w ~ Gamma(1 + α, (1 + α)/τ));
  ``beta``; ``eps`` (the crowd's noise share, choice and kind); ``rho`` (kind); ``attribute_used``
  (hit, attribute_or_noise): per draw, P(the HIT used dim k);
* log_likelihood: ``labels`` (train_hit): each training HIT's joint
  log-likelihood, so ``az.loo`` is leave-one-HIT-out; above ``loo_hits``
  training HITs (the CLI's ``--loo-hits``, default 2000) a seeded random
  subsample of them, named in the ``train_hit`` coordinate: the elpd estimate
  from a subsample is unbiased, with a subsampling error that ``az.loo``'s
  standard error does not include;
* posterior_predictive / observed_data: ``label`` (heldout_pair) — predicted
  and observed same/different for every pair of the held-out HITs; above
  ``predictive_hits`` held-out HITs (the CLI's ``--predictive-hits``, default
  2000) for the pairs of a seeded random subsample of them. The
  ``heldout_pair`` coordinate is each pair's row in the run's held-out pairs
  table (``heldout_pairs.csv``, which has every pair's predictive mean), so
  draws × pairs never outgrow memory on a large crowd.

MAP fits have one draw: only the posterior group.

Every group holds one chain, shape (1, n_draws, ...). SVI's draws come
independently from the variational guide: they are not a Markov chain, so
r-hat and ESS (which compare chains and measure autocorrelation) say nothing
about them, and splitting the draws into pseudo-chains would only make those
numbers look meaningful. With one chain ``az.summary`` has no r-hat (NaN,
with a shape warning), and its ESS of independent draws only restates how
many there are; ``az.summary(..., kind="stats")`` gives the mean, sd and HDI
alone. ``az.loo`` (ArviZ 0.23) takes one chain's relative efficiency as 1,
which is right for independent draws. Whether the guide is a good posterior
is a question for ``inference.diagnostics`` (ELBO trace, PSIS k-hat), not
for a chain diagnostic.

The conversion goes through ``az.from_dict``, the one constructor that
both ArviZ 0.23 (Python 3.11: keyword groups, returns InferenceData) and 1.x
(one dict of groups, returns a DataTree) have, and lives only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import arviz as az
import numpy as np
import torch

from cen_bayes.atomic import atomic_path
from cen_bayes.crowd import CrowdData, Pairs
from inference import predict
from models.cen import BayesianCEN, choices_beyond_dims


LOO_HITS = 2000  # training HITs whose log-likelihood is exported (a subsample above it; module docstring)
PREDICTIVE_HITS = 2000  # held-out HITs whose pairs' predictive draws are exported (likewise)


def inference_data(model: BayesianCEN, draws: list, data: CrowdData, train_hits: np.ndarray, test_pairs: Pairs,
                   pair_draws: Callable[[Pairs], np.ndarray], p_attr_draws: np.ndarray, seed: int = 0,
                   loo_hits: int = LOO_HITS, predictive_hits: int = PREDICTIVE_HITS, progress: bool = False):
    """Everything a run knows about its posterior, as InferenceData. ``pair_draws(pairs)``: the fit's (draws,
    pairs) P(same), asked for the held-out pairs exported; ``loo_hits=0`` leaves out the log-likelihood
    group, ``predictive_hits=0`` the predictive one."""
    K = model.K
    attributes = [f"dim_{k}" for k in range(K)] + list(choices_beyond_dims(p_attr_draws.shape[-1], K))
    hit_names = (data.hits["worker_id"].astype(str) + "|" + data.hits["grid_id"].astype(str)).to_numpy()
    n_train = int(train_hits.sum())
    scored = None  # the training HITs (model numbering) whose log-likelihood is exported; None: all
    if 0 < loo_hits < n_train:
        scored = np.sort(np.random.default_rng(seed).choice(n_train, loo_hits, replace=False))
    exported = predictive_pairs(test_pairs, predictive_hits, seed) if len(draws) > 1 else np.zeros(0, dtype=bool)
    coords = {"image": np.asarray(data.images, dtype=str), "worker": np.asarray(data.workers, dtype=str),
              "grid": np.asarray(data.grids, dtype=str), "attribute": attributes[:K],
              "attribute_or_noise": attributes, "hit": hit_names, "train_hit": hit_names[train_hits] if scored is None else hit_names[train_hits][scored],
              "heldout_pair": np.flatnonzero(exported)}
    dims = {"x": ["image", "attribute"], "a_w": ["worker", "attribute"], "worker_share": ["worker", "attribute"],
            "a_g": ["grid", "attribute"],
            "tau": ["attribute"], "attribute_used": ["hit", "attribute_or_noise"],
            "labels": ["train_hit"], "label": ["heldout_pair"]}
    stacked = {name: np.stack([getattr(d, name).detach().cpu().numpy() for d in draws])
               for name in predict.LATENT_SITES if getattr(draws[0], name) is not None}
    if "a_w" in stacked:
        stacked["worker_share"] = stacked["a_w"] / stacked["a_w"].sum(-1, keepdims=True)
    stacked["attribute_used"] = p_attr_draws
    if len(draws) == 1:  # MAP: a point, no uncertainty to summarise
        return to_inference_data(stacked, coords=coords, dims=dims)
    rng = np.random.default_rng(seed)
    held_out = {}
    if exported.any():  # nothing held out, or nothing asked for: no predictive group
        p_same_draws = pair_draws(test_pairs.subset(torch.from_numpy(exported)))
        held_out = dict(posterior_predictive={"label": (rng.random(p_same_draws.shape) < p_same_draws).astype(np.int8)},
                        observed_data={"label": test_pairs.label.numpy()[exported].astype(np.int8)})
    log_likelihood = {} if loo_hits == 0 else {"labels": predict.train_hit_log_likelihood(
        model, draws, None if scored is None else torch.as_tensor(scored, device=model.label.device), progress)}
    return to_inference_data(stacked, coords=coords, dims=dims, log_likelihood=log_likelihood, **held_out)


def predictive_pairs(test_pairs: Pairs, predictive_hits: int, seed: int = 0) -> np.ndarray:
    """Bool per held-out pair: exported with its predictive draws (all pairs of at most ``predictive_hits``
    held-out HITs, a seeded sample above it; none for 0)."""
    hit = test_pairs.hit.numpy()
    held = np.unique(hit)
    if predictive_hits >= len(held):
        return np.ones(len(hit), dtype=bool)
    return np.isin(hit, np.random.default_rng(seed + 1).choice(held, predictive_hits, replace=False))


def _one_chain(group: dict) -> dict:
    """(draws, ...) arrays -> (1, draws, ...): one chain of independent draws."""
    return {name: np.asarray(value)[np.newaxis] for name, value in group.items()}


def to_inference_data(posterior: dict, *, coords: dict, dims: dict, observed_data: dict | None = None,
                      posterior_predictive: dict | None = None, log_likelihood: dict | None = None):
    """Build InferenceData from draw-first arrays (observed_data: plain arrays), all draws in one chain."""
    groups = {"posterior": _one_chain(posterior)}
    if posterior_predictive:
        groups["posterior_predictive"] = _one_chain(posterior_predictive)
    if log_likelihood:
        groups["log_likelihood"] = _one_chain(log_likelihood)
    if observed_data:
        groups["observed_data"] = {k: np.asarray(v) for k, v in observed_data.items()}
    if int(az.__version__.split(".")[0]) >= 1:
        return az.from_dict(groups, coords=coords, dims=dims)
    return az.from_dict(**groups, coords=coords, dims=dims)


def write_netcdf(idata, path: str | Path) -> Path:
    """Write to ``path`` through a temporary file, so a killed run never leaves half a file."""
    with atomic_path(path) as partial:
        idata.to_netcdf(str(partial))
    return Path(path)
