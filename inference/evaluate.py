"""Fit a Bayesian CEN on a split and score it: the part shared by the CLI and the benchmarks.

Held-out pairs are every pair of the held-out HITs (whole grids, §4.5);
attribute retrieval compares each HIT's most probable dimension with the
attribute the simulator says it used (§4.3), and the per-HIT ``uncertain``
flag is scored against the simulator's noisy HITs, when that truth exists.
The fit's own diagnostics (ELBO trace, PSIS k-hat) need no truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyro
import torch

from cen_bayes.crowd import CrowdData, Pairs
from cen_bayes.metrics import attribute_retrieval, noisy_hit_recovery, pair_scores
from cen_bayes.splits import Split
from inference import predict
from inference.diagnostics import variational_diagnostics
from inference.hit_uncertainty import hit_uncertainty
from inference.fit import FitResult, fit_svi
from models.cen import BayesianCEN


@dataclass
class Evaluation:
    metrics: dict  # fit settings and seconds, diagnostics, heldout scores; retrieval and noisy_hits when known
    fit: FitResult
    model: BayesianCEN
    draws: list
    test_pairs: Pairs
    p_same: np.ndarray  # posterior predictive P(same) per test pair
    p_attr: np.ndarray  # per HIT (data.hits order), P(attribute k used) (+ P(noise) for choice)
    p_same_draws: np.ndarray  # (draws, test pairs): the same per posterior draw
    p_attr_draws: np.ndarray  # (draws, HITs, K [+ 1])
    hit_uncertainty: dict  # per HIT (data.hits order): entropy, p_unexplained, uncertain


def true_hits(sim, data: CrowdData) -> pd.DataFrame | None:
    """Per HIT, in data.hits order: the listed attribute it used (None for noisy HITs)
    and its noise kind ('none' when clean); None without a simulation."""
    if sim is None:
        return None
    truth = sim.hits.assign(worker_id=sim.hits.worker_id.astype(str), grid_id=sim.hits.grid_id.astype(str))
    merged = data.hits[["worker_id", "grid_id"]].astype(str).merge(truth, on=["worker_id", "grid_id"], how="left")
    used = merged["attribute"].where((merged["noise"] == "none") & merged["attribute"].isin(sim.attributes))
    return pd.DataFrame({"attribute": used.to_numpy(dtype=object), "noise": merged["noise"].to_numpy()})



def retrieval_metrics(sim, data: CrowdData, predicted_dim: np.ndarray) -> dict | None:
    """Attribute retrieval (paper Fig. 4) of a per-HIT predicted dimension, or None without truth."""
    truth = true_hits(sim, data)
    if truth is None:
        return None
    result = attribute_retrieval(truth["attribute"], predicted_dim, attributes=sim.attributes)
    return {"per_attribute_accuracy": result.per_attribute_accuracy.to_dict(),
            "mean_accuracy": result.mean_accuracy, "row_entropy": result.row_entropy.to_dict(),
            "assignment": {k: int(v) for k, v in result.assignment.items()}}


def fit_and_evaluate(data: CrowdData, split: Split, sim=None, *, variant: str = "choice", K: int = 10,
                     map_mode: bool = False, steps: int | None = None, lr: float | None = None,
                     batch_hits: int | None = None, draws: int = 100, seed: int = 0, device: str = "cpu",
                     progress: bool = True, checkpoint=None, resume: bool = False,
                     psis_draws: int = 200) -> Evaluation | None:
    """Fit on ``split.train_hits``, predict its test HITs; None when the fit was interrupted."""
    pyro.set_rng_seed(seed)  # the context network's initial weights come from torch's global generator
    model = BayesianCEN(data, split.train_hits, K=K, variant=variant, paper_loss=map_mode and variant != "choice")
    fit = fit_svi(model, map_mode=map_mode, steps=steps, lr=lr, batch_hits=batch_hits, seed=seed, device=device,
                  progress=progress, checkpoint=checkpoint, resume=resume)
    if fit.interrupted:
        return None
    seen = torch.zeros(data.n_grids, dtype=torch.bool, device=model.label.device)
    seen[torch.as_tensor(data.hits["grid"].to_numpy()[split.train_hits], device=seen.device)] = True
    samples = predict.posterior_draws(model, fit.guide, 1 if map_mode else draws, seen, seed=seed)
    scale = predict.threshold_scale(model, samples[0]) if model.paper_loss else None
    test_pairs = data.pairs.subset(split.pair_masks(data)[1])
    p_same_draws = predict.pair_probability_draws(model, samples, data, test_pairs, scale)
    p_same = p_same_draws.mean(0)
    metrics = {"variant": variant, "map": map_mode, "K": K, "steps": fit.steps, "lr": fit.lr, "seed": seed,
               "device": str(model.label.device), "fit_seconds": fit.seconds,
               "final_loss_per_pair": fit.losses[-1], "heldout": pair_scores(test_pairs.label.numpy(), p_same),
               "n_train_hits": int(split.train_hits.sum()), "n_test_hits": int(split.test_hits.sum()),
               "diagnostics": variational_diagnostics(model, fit.guide, fit.losses, map_mode, psis_draws, seed)}
    if model.paper_loss:
        metrics["train_paper_loss"] = predict.paper_loss(model, samples[0])
    p_attr_draws = predict.attribute_probability_draws(model, samples, data)
    p_attr = p_attr_draws.mean(0, dtype=np.float64)
    retrieval = retrieval_metrics(sim, data, p_attr[:, :K].argmax(1))
    if retrieval is not None:
        metrics["attribute_retrieval"] = retrieval
    uncertainty = hit_uncertainty(p_attr, K)
    metrics["uncertain_share"] = float(uncertainty["uncertain"].mean())
    truth = true_hits(sim, data)
    if truth is not None:
        metrics["noisy_hits"] = noisy_hit_recovery(uncertainty["uncertain"], truth["noise"])
    return Evaluation(metrics, fit, model, samples, test_pairs, p_same, p_attr, p_same_draws, p_attr_draws,
                      uncertainty)
