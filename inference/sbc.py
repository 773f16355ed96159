"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018) of the SVI posterior.

Draw parameters from the prior, simulate a crowd's labels from them, fit
the same model to those labels exactly as a user's fit runs, and record the
rank of the true value among L posterior draws. If the posterior were the
exact Bayesian one, each rank would be uniform on 0..L whatever the prior
draw; a ∪-shaped histogram means intervals too narrow (over-confident, the
usual failing of mean-field VI), ∩-shaped too wide, a slope a bias.

The checked model is the ``worker`` variant: every one of its latents
(τ, x, a^w, β) has a prior to draw from. The ``choice`` and ``mixture``
variants also learn a context network by point estimate, which has no
prior, so their "truth" could not be drawn.

The model is symmetric under permuting the K dims (with τ, a^w) and under
flipping the sign of an embedding dim, and a fit picks one of those equal
modes at random; ranks of a raw coordinate would measure the label switching,
not the calibration. So the ranked quantities are invariant ones: β, Σ_k τ_k,
each worker's total activation Σ_k a^w_k, each image's norm ||x_i||, and the
distance the likelihood sees, d = ||a^w ⊙ (x_i − x_j)||, for each HIT's
first pair.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import torch
from pyro import poutine
from scipy import stats
from tqdm.auto import tqdm

from cen_bayes.crowd import CrowdData
from inference.fit import fit_svi
from models.cen import BayesianCEN

QUANTITIES = ("beta", "tau_total", "worker_activation", "embedding_norm", "pair_distance")


def sbc_crowd(n_images: int = 16, n_workers: int = 4, n_grids: int = 8, grid_size: int = 6,
              workers_per_grid: int = 2, seed: int = 0) -> CrowdData:
    """A small crowd layout (who saw which grid); its labels are replaced by each simulation."""
    rng = np.random.default_rng(seed)
    rows = []
    for grid in range(n_grids):
        images = rng.choice(n_images, grid_size, replace=False)
        for worker in rng.choice(n_workers, workers_per_grid, replace=False):
            rows += [(f"w{worker}", f"g{grid}", f"i{image}", 0) for image in images]
    return CrowdData.from_table(pd.DataFrame(rows, columns=["worker_id", "grid_id", "image_id", "group"]))


def invariants(draw: dict, model: BayesianCEN) -> dict[str, np.ndarray]:
    """The ranked quantities of one parameter draw, each a 1-D array (see the module docstring)."""
    first = model.hit_ptr[:-1]  # each HIT's first pair
    diff = draw["x"][model.pair_i[first]] - draw["x"][model.pair_j[first]]
    values = {"beta": draw["beta"].reshape(1), "tau_total": draw["tau"].sum().reshape(1),
              "worker_activation": draw["a_w"].sum(-1), "embedding_norm": draw["x"].norm(dim=-1),
              "pair_distance": (draw["a_w"][model.hit_worker] * diff).norm(dim=-1)}
    return {name: value.detach().double().cpu().numpy() for name, value in values.items()}


def simulate(model: BayesianCEN) -> tuple[dict, torch.Tensor]:
    """One prior draw of every latent and the labels it implies."""
    trace = poutine.trace(poutine.uncondition(model)).get_trace()
    latents = {name: site["value"] for name, site in trace.nodes.items()
               if site["type"] == "sample" and name != "labels"}
    return latents, trace.nodes["labels"]["value"].detach()


def rank_of(truth: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """How many of the posterior draws (first axis) fall below the truth, per element: 0..len(draws)."""
    return (np.asarray(draws) < np.asarray(truth)).sum(0)


def sbc_ranks(replicates: int | range = 100, *, K: int = 2, draws: int = 99, steps: int | None = None, seed: int = 0,
              crowd: CrowdData | None = None, progress: bool = True) -> pd.DataFrame:
    """Rank of the truth among ``draws`` posterior draws, per replicate, quantity and element.

    ``replicates``: how many, or which (a range: a parallel run's share;
    replicate r is seeded by ``seed`` and r alone). Each replicate fits with
    the CLI's defaults (``fit_svi``) unless ``steps`` is given. Columns:
    replicate, quantity, element, rank (0..draws), truth (the prior draw's
    value) and posterior_var (the variance of the posterior draws).
    """
    crowd = crowd or sbc_crowd(seed=seed)
    model = BayesianCEN(crowd, np.ones(crowd.n_hits, dtype=bool), K=K, variant="worker")
    rows = []
    replicates = range(replicates) if isinstance(replicates, int) else replicates
    for replicate in tqdm(replicates, desc="SBC", disable=not progress):
        pyro.set_rng_seed(seed * 100_003 + replicate)
        truth, labels = simulate(model)
        model.label.copy_(labels)
        fit = fit_svi(model, steps=steps, seed=seed * 100_003 + replicate, progress=False)
        with torch.no_grad():
            posterior = [invariants(fit.guide(), model) for _ in range(draws)]
        for name, true_value in invariants(truth, model).items():
            sampled = np.stack([draw[name] for draw in posterior])
            rows += [(replicate, name, element, int(r), t, v) for element, (r, t, v)
                     in enumerate(zip(rank_of(true_value, sampled), true_value, sampled.var(0)))]
    return pd.DataFrame(rows, columns=["replicate", "quantity", "element", "rank", "truth", "posterior_var"])


def calibration_summary(ranks: pd.DataFrame, draws: int, bins: int = 10) -> pd.DataFrame:
    """Per quantity: how far the ranks are from uniform.

    ``chi2_p``: χ² test of a uniform histogram (``bins`` bins) on element 0
    only, one value per replicate, so the counts are independent (elements of
    one replicate share a fit). The rest pools every element:
    ``coverage_90`` is the share of truths inside the central 90 % posterior
    interval (0.90 if calibrated; less: over-confident), ``mean_rank`` the
    mean of rank / draws (0.5 if unbiased; above: the posterior sits below
    the truth), and ``contraction`` = 1 − mean posterior variance / prior
    variance (the truths' variance across replicates): how much the data
    narrowed the prior. SBC alone cannot tell a fit that learned nothing (the
    prior is perfectly calibrated) from a good one; contraction can.
    """
    out = []
    for name, part in ranks.groupby("quantity", sort=False):
        u = part["rank"].to_numpy() / draws
        first = part.loc[part.element == 0, "rank"].to_numpy()
        counts = np.bincount(np.minimum(first * bins // (draws + 1), bins - 1), minlength=bins)
        inside = (u >= 0.05) & (u <= 0.95)
        out.append({"quantity": name, "replicates": part.replicate.nunique(), "ranks": len(part),
                    "chi2_p": float(stats.chisquare(counts).pvalue), "coverage_90": float(inside.mean()),
                    "mean_rank": float(u.mean()),
                    "contraction": float(1.0 - part.posterior_var.mean() / part.truth.var())})
    return pd.DataFrame(out).set_index("quantity")
