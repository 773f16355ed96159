"""A fitted CEN's posterior as ArviZ InferenceData (``posterior.nc`` of a run).

Groups and dims, all named by the user's own ids:

* posterior: ``x`` (image, attribute); ``a_w`` (worker, attribute) and
  ``worker_share`` = a_w / Σ_k a_w (what the likelihood sees of a worker's
  bias: the choice variant uses only ratios, so a_w's own scale drifts, to
  ~1e-12 on retina, and ``az.summary`` of a_w rounds to 0); ``a_g``
  (grid, attribute; unseen grids drawn from their context prior); ``tau``
  (attribute); ``alpha`` (how alike workers' biases are: a^w ~ Gamma(1 + α, (1 + α)/τ));
  ``beta``; ``eps`` (the crowd's noise share, choice and kind); ``rho`` (kind); ``attribute_used``
  (hit, attribute_or_noise): per draw, P(the HIT used dim k);
* log_likelihood: ``labels`` (train_hit): each training HIT's joint
  log-likelihood, so ``az.loo`` is leave-one-HIT-out;
* posterior_predictive / observed_data: ``label`` (heldout_pair) — predicted
  and observed same/different for every pair of the held-out HITs.

Every group is one chain of all the draws: independent draws from the
variational guide, not MCMC, so r-hat and ESS do not apply
(``cen_bayes.posterior``). MAP fits have one draw: only the posterior group.
"""

from __future__ import annotations

import numpy as np

from cen_bayes.crowd import CrowdData, Pairs
from cen_bayes.posterior import to_inference_data
from inference import predict
from models.cen import BayesianCEN, choices_beyond_dims


def inference_data(model: BayesianCEN, draws: list, data: CrowdData, train_hits: np.ndarray, test_pairs: Pairs,
                   p_same_draws: np.ndarray, p_attr_draws: np.ndarray, seed: int = 0):
    """Everything a run knows about its posterior, as InferenceData."""
    K = model.K
    attributes = [f"dim_{k}" for k in range(K)] + list(choices_beyond_dims(p_attr_draws.shape[-1], K))
    hit_names = (data.hits["worker_id"].astype(str) + "|" + data.hits["grid_id"].astype(str)).to_numpy()
    coords = {"image": np.asarray(data.images, dtype=str), "worker": np.asarray(data.workers, dtype=str),
              "grid": np.asarray(data.grids, dtype=str), "attribute": attributes[:K],
              "attribute_or_noise": attributes, "hit": hit_names, "train_hit": hit_names[train_hits],
              "heldout_pair": np.arange(len(test_pairs))}
    dims = {"x": ["image", "attribute"], "a_w": ["worker", "attribute"], "worker_share": ["worker", "attribute"],
            "a_g": ["grid", "attribute"],
            "tau": ["attribute"], "attribute_used": ["hit", "attribute_or_noise"],
            "labels": ["train_hit"], "label": ["heldout_pair"]}
    names = ("x", "a_w", "a_g", "tau", "alpha", "beta", "eps", "rho")
    stacked = {name: np.stack([getattr(d, name).detach().cpu().numpy() for d in draws])
               for name in names if getattr(draws[0], name) is not None}
    if "a_w" in stacked:
        stacked["worker_share"] = stacked["a_w"] / stacked["a_w"].sum(-1, keepdims=True)
    stacked["attribute_used"] = p_attr_draws
    if len(draws) == 1:  # MAP: a point, no uncertainty to summarise
        return to_inference_data(stacked, coords=coords, dims=dims)
    rng = np.random.default_rng(seed)
    return to_inference_data(
        stacked, coords=coords, dims=dims,
        log_likelihood={"labels": predict.train_hit_log_likelihood(model, draws)},
        posterior_predictive={"label": (rng.random(p_same_draws.shape) < p_same_draws).astype(np.int8)},
        observed_data={"label": test_pairs.label.numpy().astype(np.int8)})
