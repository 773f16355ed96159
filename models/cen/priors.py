"""The two sets of priors a Bayesian CEN can take, as interchangeable parts of one model.

``BayesianCEN`` tells the generative story once (``models.cen.model``); which
distribution each latent gets, and how a pair's label is scored, is asked of
its ``priors``:

* ``CrowdPriors`` (the Bayesian CEN): a crowd level τ (which attributes the
  crowd favours) and α (how alike workers are), Gaussian embeddings, worker
  activations around τ, grid activations whose prior mean is the context
  network's output, and the normalised likelihood of the paper's energy with
  a learned temperature β.
* ``PaperPriors`` (the MAP mode on the paper's loss): eq. 8's penalties read
  as priors, so that with a point-mass guide the negative log joint *is* the
  paper's loss; no crowd level, no temperature, the energy as a factor.

Each part also says what a worker with no training HIT gets at prediction
time, and how a pair's distance becomes P(same), so that prediction asks the
same part the fit did.

Eq. 8 penalises each embedding with λ2·||x_i||₂, the plain (not squared)
Euclidean norm. As a log-density that is a *radial Laplace* prior,
p(x) ∝ exp(−r·||x||₂): its MAP is the paper's penalty exactly, and it is a
proper distribution, so the MAP mode is a real Pyro model with a point-mass
guide rather than a loss with a Pyro wrapper.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from pyro.infer.autoguide import init_to_median
from torch import nn
from torch.distributions import Gamma

from models.encoders import context_encoder, padded_grid_sets
from models.energy import contrastive_energy, same_logit


def worker_prior(tau, alpha=None) -> dist.Distribution:
    """A worker's activation per dim, Gamma(1 + α, (1 + α)/τ_k): mean τ_k (the crowd's preference),
    cv 1/√(1 + α); the shape stays ≥ 1 so the density has no spike at 0 (see ``BayesianCEN``).
    Without α (the choice variants): Exponential(1/τ_k)."""
    if alpha is None:
        return dist.Exponential(1.0 / tau)
    shape = 1.0 + alpha.unsqueeze(-1)
    return dist.Gamma(shape, shape / tau)


class ContextNet(nn.Module):
    """Grid features -> positive multiplier of each dimension's activation scale.

    Input: the log standard deviation of the grid's images along each
    embedding dimension (a dimension along which the grid varies is one a
    worker can sort by). Shared across grids, so it also scores unseen grids.
    """

    def __init__(self, K: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(K, hidden), nn.ReLU(), nn.Linear(hidden, K))

    def forward(self, spread: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.net(torch.log(spread + 1e-3)) + 0.5413)  # softplus(0.5413) = 1


class CrowdPriors:
    """The Bayesian CEN's priors (the generative story in ``BayesianCEN``'s docstring).

    Every method takes the model, which holds the data-dependent pieces (the
    training pairs, the context network, the grids' images).
    """

    paper_loss = False

    def attach(self, model, data) -> None:
        model.context_net = ContextNet(model.K)

    def activation_scale(self, model) -> torch.Tensor:
        with pyro.plate("attributes", model.K):
            return pyro.sample("tau", dist.Exponential(model.one))

    def embeddings(self, model) -> torch.Tensor:
        with pyro.plate("images", model.n_images):
            return pyro.sample("x", dist.Normal(model.zero, model.embed_scale).expand([model.K]).to_event(1))

    def worker_concentration(self, model) -> torch.Tensor | None:
        """α for the variants whose workers are Gamma around τ; the choice variants keep Exponential(1/τ)."""
        if model.variant not in ("mixture", "worker"):
            return None
        return pyro.sample("alpha", dist.Exponential(model.one))

    def worker_activations(self, model, tau, alpha) -> torch.Tensor:
        with pyro.plate("workers", model.n_workers):
            return pyro.sample("a_w", worker_prior(tau, alpha).expand([model.n_workers, model.K]).to_event(1))

    def grid_activations(self, model, x, tau) -> torch.Tensor:
        """a^g per grid.

        Continuous variants: a latent per grid whose prior mean is the context
        network's output. Choice variants: the network's output itself, like the
        paper's p_θ(s(g)). There a free a^g per grid can explain each HIT's
        attribute on its own when a grid is sorted once (as in the paper's
        data), so the worker bias stays unlearned and an unseen grid's prior is
        vague (benchmarks/README.md); the continuous variants do better with
        the latent.
        """
        scale = tau * model.context_net(model.grid_spread(x))
        if model.sums_out_choice:
            return scale
        with pyro.plate("grids", model.n_grids):
            return pyro.sample("a_g", dist.Exponential(1.0 / scale).to_event(1))

    def new_grid_activations(self, model, x, grids, tau, n_draws: int = 1) -> torch.Tensor:
        """(n_draws, new grids, K) a^g of grids outside the fit, each of equal size, given as image codes
        (new grids, S): the prior of ``grid_activations`` given their images' spread, which is what the
        model knows of a grid before any HIT shows it; choice variants: its value (the same in every
        draw), continuous variants: ``n_draws`` draws of the per-grid latent."""
        members = x[grids]
        mean, square = members.mean(-2), (members ** 2).mean(-2)  # the spread as ``BayesianCEN.grid_spread``
        scale = tau * model.context_net((square - mean ** 2).clamp(min=0.0).sqrt())
        if model.sums_out_choice:
            return scale.expand(n_draws, *scale.shape)
        return dist.Exponential(1.0 / scale).sample((n_draws,))

    def temperature(self, model) -> torch.Tensor:
        return pyro.sample("beta", dist.LogNormal(model.zero, model.one))

    def labels(self, model, label, d, beta) -> None:
        """The pairs' labels given their weighted distances (inside the model's pairs plate)."""
        pyro.sample("labels", dist.Bernoulli(logits=same_logit(d, model.gamma, model.xi_p, model.xi_n, beta)),
                    obs=label)

    def same_probability(self, model, d, beta, threshold_scale=None) -> torch.Tensor:
        """P(same) of pairs at weighted distance ``d``: the likelihood of ``labels``."""
        return torch.sigmoid(same_logit(d, model.gamma, model.xi_p, model.xi_n, beta))

    def new_worker_activations(self, model, a_w, seen_workers, tau, alpha, point: bool) -> torch.Tensor:
        """a^w of a worker with no training HIT: a draw from the crowd level (the posterior
        predictive for a new worker), or its mean τ for a MAP point."""
        if point:
            return tau.expand_as(a_w)
        return worker_prior(tau, alpha).sample(a_w.shape[:-1])

    def initial_value(self, site, like: torch.Tensor) -> torch.Tensor:
        """Where a latent other than the embedding starts (``like``: a draw of its shape): its prior median."""
        return init_to_median(site)


class PaperPriors:
    """Eq. 8's penalties as priors; summing them over pairs gives per-parameter rates.

    Σ_pairs λ1||a^m||₁ = Σ_w λ1 n_w ||a^w||₁ + Σ_g λ1 n_g ||a^g||₁  (activations are ≥ 0)
    Σ_pairs λ2(||x_i||₂ + ||x_j||₂) = Σ_i λ2 n_i ||x_i||₂
    where n_w, n_g, n_i count the training pairs of worker w, grid g, image i.
    So a^w_wk ~ Exponential(λ1 n_w) and x_i ~ RadialLaplace(λ2 n_i); the
    context network's output a^g is deterministic (as in the paper, its
    200-unit encoder of the grid's image set) and its penalty enters as a
    factor; the labels' energy is a factor too, with no temperature.
    """

    paper_loss = True

    def __init__(self, lambda1: float = 5e-6, lambda2: float = 1e-3):
        self.lambda1, self.lambda2 = lambda1, lambda2

    def attach(self, model, data) -> None:
        """The training-pair counts n_w, n_g, n_i, the grids' image sets and the paper's context encoder."""
        model.register_buffer("n_worker", torch.bincount(model.pair_worker, minlength=data.n_workers).float())
        model.register_buffer("n_grid", torch.bincount(model.pair_grid, minlength=data.n_grids).float())
        model.register_buffer("n_image", (torch.bincount(model.pair_i, minlength=data.n_images)
                                          + torch.bincount(model.pair_j, minlength=data.n_images)).float())
        model.register_buffer("grid_sets", padded_grid_sets(data))
        model.context_net = context_encoder(data.n_images, model.K)

    def activation_scale(self, model) -> None:
        return None

    def embeddings(self, model) -> torch.Tensor:
        with pyro.plate("images", model.n_images):
            return pyro.sample("x", RadialLaplace(self.lambda2 * model.n_image.clamp(min=1.0), model.K))

    def worker_concentration(self, model) -> None:
        return None

    def worker_activations(self, model, tau, alpha) -> torch.Tensor:
        with pyro.plate("workers", model.n_workers):
            rate = self.lambda1 * model.n_worker.clamp(min=1.0)
            return pyro.sample("a_w", dist.Exponential(rate.unsqueeze(-1).expand(-1, model.K)).to_event(1))

    def grid_activations(self, model, x, tau) -> torch.Tensor:
        a_g = model.context_net(model.grid_sets)
        pyro.factor("a_g_penalty", -self.lambda1 * (model.n_grid * a_g.sum(-1)).sum())
        return a_g

    def temperature(self, model) -> None:
        return None

    def labels(self, model, label, d, beta) -> None:
        pyro.factor("labels", -contrastive_energy(label, d, model.gamma, model.xi_p, model.xi_n))

    def same_probability(self, model, d, beta, threshold_scale=None) -> torch.Tensor:
        """The paper's rule d < (ξ_n + ξ_p)/2 as a probability, with a fitted scale (scale-only Platt,
        ``models.energy.fit_threshold_scale``)."""
        return torch.sigmoid(threshold_scale * ((model.xi_n + model.xi_p) / 2 - d))

    def new_worker_activations(self, model, a_w, seen_workers, tau, alpha, point: bool) -> torch.Tensor:
        """The paper's penalty is nearly flat, no population to draw from: the training workers' mean."""
        return a_w[seen_workers].mean(0).expand_as(a_w)

    def initial_value(self, site, like: torch.Tensor) -> torch.Tensor:
        """Moderate values, like a fresh network's output: the nearly flat priors have no useful median."""
        return 0.5 + 0.1 * torch.rand_like(like)


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
