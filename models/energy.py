"""The paper's dual-margin contrastive energy (eq. 6-7) and the likelihood built from it.

Every CEN in this project, Bayesian or point estimate, scores a pair through
the attribute-weighted distance d = ||a ⊙ (x_i − x_j)||₂ (eq. 3-5) and the
energy E(l, d) = γ·l·[d − ξ_p]₊ + (1 − l)·[ξ_n − d]₊ (eq. 7). Keeping both in
one place makes "the MAP objective is the paper's loss" a statement about one
function.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

# Supplement A: positive margin, negative margin, positive-similarity weight.
XI_P, XI_N, GAMMA = 1.0, 6.0, 5.0


def weighted_distance(a: torch.Tensor, x_i: torch.Tensor, x_j: torch.Tensor) -> torch.Tensor:
    """d(x_i, x_j; a) = ||a ⊙ (x_i − x_j)||₂ over the last (attribute) dim, eq. 3-5."""
    return weighted_norm(a, x_i - x_j)


def weighted_norm(a: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """||a ⊙ diff||₂ over the last dim, for callers that already hold x_i − x_j.

    At 0 (e.g. a dead ReLU activation) ``vector_norm``'s gradient is 0, a
    valid subgradient (a hand-written sqrt of a sum would give NaN there and
    poison the whole step), and its fused kernel is faster.
    """
    return torch.linalg.vector_norm(a * diff, dim=-1)


def contrastive_energy(label, d, gamma=GAMMA, xi_p=XI_P, xi_n=XI_N) -> torch.Tensor:
    """E(l, d) = γ·l·[d − ξ_p]₊ + (1 − l)·[ξ_n − d]₊ (eq. 7): pull same pairs inside ξ_p, push others past ξ_n."""
    return gamma * label * F.relu(d - xi_p) + (1.0 - label) * F.relu(xi_n - d)


def paper_pair_loss(label, a, x_i, x_j, gamma=GAMMA, xi_p=XI_P, xi_n=XI_N, lambda1=5e-6, lambda2=1e-3):
    """Eq. 8 per pair: the energy plus λ1||a||₁ + λ2||x_i||₂ + λ2||x_j||₂ (supplement A's λ's)."""
    energy = contrastive_energy(label, weighted_distance(a, x_i, x_j), gamma, xi_p, xi_n)
    return energy + lambda1 * a.abs().sum(-1) + lambda2 * (torch.linalg.vector_norm(x_i, dim=-1)
                                                           + torch.linalg.vector_norm(x_j, dim=-1))


def same_logit(d, gamma=GAMMA, xi_p=XI_P, xi_n=XI_N, beta=1.0) -> torch.Tensor:
    """Logit of P(l = 1 | d) when exp(−β·E(l, d)) is normalised over l ∈ {0, 1}.

    P(l=1|d) = e^{−βE(1,d)} / (e^{−βE(1,d)} + e^{−βE(0,d)}) = σ(β(E(0,d) − E(1,d))),
    so the Bayesian likelihood is the paper's energy turned into a proper
    Bernoulli; β (a temperature) sets how sharp it is.
    """
    return beta * (F.relu(xi_n - d) - gamma * F.relu(d - xi_p))


def fit_threshold_scale(margin, label) -> float:
    """Scale-only Platt scaling: argmin_{s>0} mean BCE(label, σ(s·margin)).

    The paper predicts 'same' when d < (ξ_n+ξ_p)/2 (§4.5); with margin =
    (ξ_n+ξ_p)/2 − d, one fitted scale turns that rule into a probability for
    NLL/ECE without moving its threshold. Point-estimate models share it.
    """
    signed = np.asarray(margin, dtype=np.float64) * (2.0 * np.asarray(label, dtype=np.float64) - 1.0)
    result = minimize_scalar(lambda log_s: np.mean(np.logaddexp(0.0, -np.exp(log_s) * signed)),
                             bounds=(np.log(1e-3), np.log(1e3)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))
