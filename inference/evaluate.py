"""Fit a method on a split and score it: the part shared by the CLI and the benchmarks.

``fit_and_evaluate`` runs the Bayesian CEN (``cen_bayes.api.CEN``) with its
posterior extras (draws, diagnostics), ``evaluate_method`` any ``PairMethod``
(baselines, the paper's point-estimate CEN, a ``CEN`` too); both end in
``score``, so every method is measured the same way. Held-out pairs are
every pair of the held-out HITs (whole grids, §4.5). When the simulator's
truth exists: attribute retrieval compares each HIT's most probable
dimension with the attribute it used (§4.3), the per-HIT ``uncertain`` flag
is scored against its noisy HITs, and the embedding is clustered (K-means
and a DP mixture) against each image's class (supplement F). The Bayesian
fit's own diagnostics (ELBO trace, PSIS k-hat) need no truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cen_bayes.crowd import CrowdData, Pairs
from cen_bayes.datasets import true_hits
from cen_bayes.metrics import (attribute_retrieval, cluster_embedding, clustering_scores, noisy_hit_recovery,
                               pair_scores)
from cen_bayes.splits import Split, seen_images
from cen_bayes.api import AUTO, CEN
from inference import predict
from inference.hit_uncertainty import hit_uncertainty
from inference.fit import FitResult
from models.cen import BayesianCEN
from models.energy import GAMMA
from models.pair_method import PairMethod
from models.svi_trainer import process_group


@dataclass
class Scored:
    """What every method's run yields: the output files are written from this."""

    metrics: dict  # settings, fit seconds, heldout scores; retrieval, noisy_hits, clustering when known
    test_pairs: Pairs
    p_same: np.ndarray  # P(same) per test pair (Bayesian: posterior predictive mean)
    embedding: np.ndarray  # (n_images, K) coordinates (Bayesian: posterior mean)
    embedding_sd: np.ndarray | None  # posterior sd; None for point estimates
    p_attr: np.ndarray | None  # per HIT (data.hits order), P(dim k used) (+ P(noise) for choice); None if blind
    hit_uncertainty: dict | None  # per HIT: entropy, p_unexplained, uncertain (with p_attr)


@dataclass
class Evaluation(Scored):
    """A Bayesian CEN run: the scores plus what posterior.nc is built from."""

    fit: FitResult | None = None
    model: BayesianCEN | None = None
    draws: list | None = None
    p_attr_draws: np.ndarray | None = None  # (draws, HITs, K [+ 2])
    cen: CEN | None = None  # the fitted estimator all of the above came from


def retrieval_metrics(sim, data: CrowdData, predicted_dim: np.ndarray) -> dict | None:
    """Attribute retrieval (paper Fig. 4) of a per-HIT predicted dimension, or None without truth."""
    truth = true_hits(sim, data)
    if truth is None:
        return None
    result = attribute_retrieval(truth["attribute"], predicted_dim, attributes=sim.attributes)
    return {"per_attribute_accuracy": result.per_attribute_accuracy.to_dict(),
            "confusion": {a: row.tolist() for a, row in result.confusion.iterrows()},
            "confusion_dims": [int(k) for k in result.confusion.columns],
            "mean_accuracy": result.mean_accuracy, "row_entropy": result.row_entropy.to_dict(),
            "assignment": {k: int(v) for k, v in result.assignment.items()}}


def fit_and_evaluate(data: CrowdData, split: Split, sim=None, *, variant: str = AUTO, K: int | str = AUTO,
                     map_mode: bool = False, steps: int | None = None, lr: float | None = None,
                     batch_hits: int | None = None, draws: int = 100, seed: int = 0, device: str = "cpu",
                     progress: bool = True, checkpoint=None, resume: bool = False, checkpoint_every: int = 100,
                     psis_draws: int = 200, gamma: float = GAMMA) -> Evaluation | None:
    """Fit a ``CEN`` on ``split.train_hits``, predict its test HITs; None when the fit was interrupted, and
    on every rank but 0 of a data-parallel fit (the scoring is rank 0's alone, not repeated on each).

    ``variant`` / ``K`` ``"auto"`` (the defaults): chosen first by ``inference.select`` on a
    validation share of the training grids, then refitted on all of them; the candidates'
    scores go to ``metrics["selection"]``.
    """
    cen = CEN(K, variant, map_mode=map_mode, steps=steps, lr=lr, batch_hits=batch_hits, draws=draws, seed=seed,
              device=device, progress=progress, gamma=gamma, checkpoint=checkpoint, resume=resume,
              checkpoint_every=checkpoint_every).fit(data, split)
    if cen.interrupted_ or process_group()[0] > 0:  # under torchrun rank 0 alone scores and writes
        return None
    model, fit, selection = cen.model_, cen.fit_result_, cen.selection_
    test_pairs = data.pairs.subset(split.pair_masks(data)[1])
    p_same = cen.predict_proba(data, test_pairs)
    metrics = {"method": "cen", "variant": cen.variant_, "map": map_mode, "K": cen.K_, "gamma": gamma,
               "steps": fit.steps, "lr": fit.lr, "batch_hits": fit.batch_hits, "seed": seed,
               "device": str(model.label.device),
               "fit_seconds": fit.seconds,
               **({"selection": selection.records(), "selection_seconds": float(selection.scores.seconds.sum())}
                  if selection else {}),
               "final_loss_per_pair": fit.losses[-1], "diagnostics": cen.diagnostics(psis_draws)}
    if model.paper_loss:
        metrics["train_paper_loss"] = predict.paper_loss(model, cen.draws_[0])
    p_attr_draws = cen.attribute_probability_draws()
    scored = score(metrics, data, split, sim, test_pairs, p_same, cen.embedding_, cen.embedding_sd_,
                   p_attr_draws.mean(0, dtype=np.float64), seed)
    return Evaluation(**vars(scored), fit=fit, model=model, draws=cen.draws_,
                      p_attr_draws=p_attr_draws, cen=cen)


def evaluate_method(method: PairMethod, data: CrowdData, split: Split, sim=None, seed: int = 0) -> Scored:
    """Fit a ``PairMethod`` on ``split.train_hits`` and score it like the Bayesian CEN."""
    method.fit(data, split)
    test_pairs = data.pairs.subset(split.pair_masks(data)[1])
    p_attr = method.hit_attribute_probabilities(data, np.arange(data.n_hits))
    metrics = {"method": method.name, "K": int(method.embedding_.shape[1]), "seed": seed,
               "fit_seconds": method.fit_seconds_}
    p_same = method.predict_proba(data, test_pairs) if len(test_pairs) else np.zeros(0)
    return score(metrics, data, split, sim, test_pairs, p_same, method.embedding_, method.embedding_sd_, p_attr,
                 seed, flag_uncertain=False)


def score(metrics: dict, data: CrowdData, split: Split, sim, test_pairs: Pairs, p_same: np.ndarray,
          embedding: np.ndarray, embedding_sd: np.ndarray | None, p_attr: np.ndarray | None, seed: int,
          flag_uncertain: bool = True) -> Scored:
    """Add held-out, retrieval, uncertainty and clustering scores to ``metrics``; ``heldout`` is None
    when nothing was held out (``--holdout-frac 0``: a fit of every grid).

    ``flag_uncertain=False`` for methods whose p_attr is a hard call (the paper's
    argmax): a one-hot row has no uncertainty to flag.
    """
    K = embedding.shape[1]
    metrics.update({"n_train_hits": int(split.train_hits.sum()), "n_test_hits": int(split.test_hits.sum())})
    if len(test_pairs):  # fitted on every grid (no hold-out): nothing held out to score
        y = test_pairs.label.numpy()
        seen = seen_images(data, split.train_hits)
        metrics.update({"heldout": pair_scores(y, p_same),
                        **seen_unseen_scores(y, p_same, seen[test_pairs.i.numpy()] & seen[test_pairs.j.numpy()])})
    else:
        metrics["heldout"] = None
    uncertainty = None
    if p_attr is not None:
        retrieval = retrieval_metrics(sim, data, p_attr[:, :K].argmax(1))
        if retrieval is not None:
            metrics["attribute_retrieval"] = retrieval
    if p_attr is not None and flag_uncertain:
        uncertainty = hit_uncertainty(p_attr, K)
        metrics["uncertain_share"] = float(uncertainty["uncertain"].mean())
        truth = true_hits(sim, data)
        if truth is not None:
            metrics["noisy_hits"] = noisy_hit_recovery(uncertainty["uncertain"], truth["noise"])
    clustering = clustering_metrics(sim, data, embedding, seed)
    if clustering is not None:
        metrics["clustering"] = clustering
    return Scored(metrics, test_pairs, p_same, embedding, embedding_sd, p_attr, uncertainty)


def seen_unseen_scores(labels: np.ndarray, p_same: np.ndarray, both_seen: np.ndarray) -> dict:
    """``heldout_both_images_seen`` and ``heldout_an_image_unseen``: the pair scores of the held-out
    pairs whose two images a training grid showed, and of the rest (an image no training grid showed
    has only the collection's base rates to go on); a part with no pair gets its ``n_pairs`` only."""
    return {f"heldout_{part}": {"n_pairs": int(mask.sum()), **(pair_scores(labels[mask], p_same[mask])
                                                              if mask.any() else {})}
            for part, mask in (("both_images_seen", both_seen), ("an_image_unseen", ~both_seen))}


def image_classes(sim, data: CrowdData) -> np.ndarray | None:
    """Each image's class (data.images order): its species or leaf category where the simulation
    has them (birds, categories), else its combination of listed attribute levels; None without a
    simulation."""
    if sim is None:
        return None
    levels = sim.image_attributes.set_axis(sim.image_attributes.index.astype(str))
    levels = levels.reindex(np.asarray(data.images, dtype=str))
    for kind in ("species", "category"):  # birds; the category-sorting simulation (its leaf categories)
        if kind in levels:
            return levels[kind].astype(str).to_numpy()
    return levels[sim.attributes].astype(str).agg("-".join, axis=1).to_numpy()


def clustering_metrics(sim, data: CrowdData, embedding: np.ndarray, seed: int = 0) -> dict | None:
    """K-means and a DP mixture (as many clusters / components as classes) on the embedding,
    scored by MCC, NMI and F1 against ``image_classes`` (supplement F)."""
    classes = image_classes(sim, data)
    if classes is None:
        return None
    n = len(np.unique(classes))
    return {"n_classes": n, **{method: clustering_scores(classes, cluster_embedding(embedding, n, method, seed))
                               for method in ("kmeans", "dpgmm")}}
