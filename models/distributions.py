"""Priors that Pyro lacks but the paper's loss implies.

Eq. 8 penalises each embedding with λ2·||x_i||₂ — the plain (not squared)
Euclidean norm. As a log-density that is a *radial Laplace* prior,
p(x) ∝ exp(−r·||x||₂): its MAP is the paper's penalty exactly, and it is a
proper distribution, so the MAP mode is a real Pyro model with a point-mass
guide rather than a loss with a Pyro wrapper.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import Gamma


class RadialLaplace(TorchDistribution):
    """p(x) = r^K Γ(K/2) / (2 π^{K/2} Γ(K)) · exp(−r ||x||₂) on R^K.

    The norm ρ = ||x|| is Gamma(K, r) and the direction uniform on the sphere,
    which is how samples are drawn.
    """

    arg_constraints = {"rate": constraints.positive}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, rate, dim: int, validate_args=None):
        self.rate = torch.as_tensor(rate)
        self.dim = int(dim)
        super().__init__(self.rate.shape, torch.Size([self.dim]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return RadialLaplace(self.rate.expand(batch_shape), self.dim)

    def log_normaliser(self) -> torch.Tensor:
        k = self.dim
        return (k * torch.log(self.rate) + math.lgamma(k / 2) - math.log(2.0)
                - (k / 2) * math.log(math.pi) - math.lgamma(k))

    def log_prob(self, value):
        return self.log_normaliser() - self.rate * torch.linalg.vector_norm(value, dim=-1)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        direction = torch.randn(shape, dtype=self.rate.dtype, device=self.rate.device)
        direction = direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)
        radius = Gamma(torch.full_like(self.rate, float(self.dim)), self.rate).rsample(sample_shape)
        return direction * radius.unsqueeze(-1)
