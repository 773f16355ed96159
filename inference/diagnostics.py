"""Did the variational fit work? The ELBO trace and the PSIS k-hat of the guide.

The k-hat follows Yao, Vehtari, Simpson & Gelman (2018), "Yes, but did it
work?": draw θ ~ q, take the importance ratios log p(θ, y) − log q(θ), and
fit a generalised Pareto distribution to their largest values. Its shape k
says how heavy the ratios' tail is: below 0.5 q is close to the posterior,
0.5–0.7 usable, above 0.7 the guide misses posterior mass and its spreads
(credible intervals) should not be read at face value. In a posterior of
thousands of dimensions a mean-field guide nearly always scores above 0.7,
even when its predictions are calibrated; that is why the warning says what
it means and what is still safe to use. Pyro's own ``psis_diagnostic`` needs
a model vectorised over particles, which the sparse CEN likelihood is not,
so the ratios come from one guide/model trace pair per draw.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.ops.stats import fit_generalized_pareto
from tqdm.auto import tqdm

KHAT_WARNING = 0.7
MAX_TRACE_POINTS = 500


@torch.no_grad()
def importance_log_ratios(model, guide, n_draws: int, seed: int = 0, progress: bool = False) -> np.ndarray:
    """log p(θ, y) − log q(θ) for ``n_draws`` draws θ ~ q (model and guide take no arguments), float64."""
    pyro.set_rng_seed(seed)
    ratios = []
    for _ in tqdm(range(n_draws), desc="PSIS k-hat", disable=not progress, leave=False):
        guide_trace = poutine.trace(guide).get_trace()
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace()
        ratios.append((model_trace.log_prob_sum() - guide_trace.log_prob_sum()).double().item())
    return np.asarray(ratios)


def pareto_khat(log_ratios: np.ndarray) -> float:
    """Shape of a generalised Pareto fitted to the largest M = min(S/5, 3√S) ratios (PSIS).

    Ratios more than 15 orders of magnitude below the largest are left out of
    the fit (they would only be rounding); when fewer than 5 tail ratios
    remain, one draw carries nearly all the weight and k-hat is ∞.
    """
    log_ratios = np.sort(np.asarray(log_ratios, dtype=np.float64))
    n_tail = int(math.ceil(min(0.2 * len(log_ratios), 3.0 * math.sqrt(len(log_ratios)))))
    if n_tail < 5:
        raise ValueError(f"{len(log_ratios)} draws are too few for a k-hat; use at least 25")
    if np.ptp(log_ratios) < 1e-8:  # all ratios equal: q is the posterior
        return -math.inf
    shifted = log_ratios - log_ratios[-1]  # the largest ratio is 1: no overflow
    cutoff = max(shifted[-n_tail - 1], math.log(1e-15))
    tail = shifted[shifted > cutoff]
    if len(tail) < 5:
        return math.inf
    k, _ = fit_generalized_pareto(torch.from_numpy(np.exp(tail) - math.exp(cutoff)))
    return float(k)


def khat_warning(khat: float) -> str | None:
    """The plain-words reading of a k-hat above 0.7 (None when below)."""
    if not khat > KHAT_WARNING:
        return None
    return (f"PSIS k-hat {khat:.2f} > {KHAT_WARNING}: the variational posterior is a poor approximation of the true "
            "posterior as a whole, so its credible intervals are likely too narrow. Check predictions on held-out "
            "grids (accuracy, NLL, calibration) before trusting its uncertainty.")


def thinned_trace(losses: list[float]) -> tuple[list[int], list[float]]:
    """(steps, values) of the loss trace, at most ``MAX_TRACE_POINTS`` evenly spaced (last step kept)."""
    stride = max(1, math.ceil(len(losses) / MAX_TRACE_POINTS))
    steps = list(range(0, len(losses), stride))
    if losses and steps[-1] != len(losses) - 1:
        steps.append(len(losses) - 1)
    return steps, [float(losses[s]) for s in steps]


def variational_diagnostics(model, guide, losses: list[float], map_mode: bool, n_draws: int = 200,
                            seed: int = 0, progress: bool = False) -> dict:
    """What ``metrics.json`` reports about the fit: its ELBO trace, k-hat and warning.

    ``losses`` are the fit's −ELBO per training pair (for MAP: −log joint,
    the ELBO of a point guide). MAP has no spread to check, so no k-hat;
    ``n_draws=0`` skips it too (benchmarks that only score predictions).
    """
    steps, values = thinned_trace([-loss for loss in losses])
    out = {"elbo_step": steps, "elbo_per_pair": values, "psis_khat": None, "psis_draws": 0, "warning": None}
    if not map_mode and n_draws > 0:
        khat = pareto_khat(importance_log_ratios(model, guide, n_draws, seed, progress))
        out.update(psis_khat=khat, psis_draws=n_draws, warning=khat_warning(khat))
    return out
