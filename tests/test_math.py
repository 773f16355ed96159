"""Tests that pin the mathematics: the choice model's exact sum over z, and the radial Laplace prior.

1. ``BayesianCEN`` (``choice`` and ``kind``) sums each HIT's attribute choice
   z out by hand: a log prior per option (``choice_log_prior``) plus each
   option's log-likelihood of the HIT's labels, scored once per distinct image
   pair through sparse products (``models.cen.hit_pairs``), then a logsumexp.
   Here an independent Pyro model draws z_h from a Categorical in a plate,
   with plain per-pair Bernoulli likelihoods, and Pyro's ``TraceEnum_ELBO``
   does the sum; the two log marginals must agree HIT by HIT, for all
   training HITs and for a minibatch. The reference is written from the
   model's docstring, not from its code (only a^g's context network is the
   model's own): probabilities (not log weights), one pair at a time (not
   per distinct pair), and the noise option's
   Beta-Bernoulli marginal by the chain rule (a Pólya urn: the t-th label is
   "same" with probability (u + same so far)/(u + v + t)), not by the
   closed-form Beta functions. A second test checks that the comparison has
   power: a wrong prior weight for any single option, or swapped noise
   parameters, in the reference makes it fail.
2. ``RadialLaplace``: its density integrates to 1 (a grid in 1-D and 2-D,
   importance sampling in 5-D), and ``.sample()`` draws have the moments that
   the density implies (numerical integration of the density, against sample
   means within several standard errors).
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.nn import PyroParam
from pyro.ops.indexing import Vindex
from pyro.poutine.util import site_is_subsample

from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from models.cen import BayesianCEN
from models.cen.priors import RadialLaplace
from models.energy import GAMMA, XI_N, XI_P

K = 3
RTOL = 1e-4
NOISE_U, NOISE_V = 0.7, 2.3  # away from the initial Beta(1, 1), and u != v so swapping them shows


# ----- 1. the choice variants' sum over z against Pyro's enumeration --------------------------------------

@pytest.fixture(scope="module")
def crowd():
    """A small crowd whose grids are each sorted by two workers (so image pairs repeat across HITs),
    with a training subset spread over workers and grids (so HIT codes are renumbered)."""
    sim = load_dataset("tiny", seed=0, n_grids=20, grid_size=6, hits_per_grid=2)
    data = CrowdData.from_source(sim.table)
    train = np.random.default_rng(0).random(data.n_hits) < 0.7
    return data, train


def _latents(model: BayesianCEN, seed: int, beta: float) -> dict:
    """Continuous latents drawn once from the prior, with the temperature fixed at ``beta``: a small β
    keeps every option's posterior weight away from 0 in some HITs, so each option's weight matters."""
    pyro.set_rng_seed(seed)
    trace = poutine.trace(model).get_trace()
    values = {name: site["value"].detach() for name, site in trace.nodes.items()
              if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)}
    assert set(values) == {"tau", "x", "a_w", "beta", "eps"} | ({"rho"} if model.overall else set())
    values["beta"] = torch.tensor(beta)
    return values


def _model_per_hit(model: BayesianCEN, values: dict, hits: torch.Tensor | None = None) -> torch.Tensor:
    """The model's own log P(labels of h | latents) per HIT: the value of its ``labels`` factor."""
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(hits)
    site = trace.nodes["labels"]
    return site["fn"].log_prob(site["value"]).detach().double()


def _reference_tables(model: BayesianCEN, data: CrowdData, train: np.ndarray, values: dict, overall: bool):
    """Per training HIT: prior probabilities of z, and per pair and option the logit of "same".

    Returns probs (H, C), logits (H, P, C), labels (H, P), mask (H, P) with P the largest HIT's pair
    count, in float64; the options are dims 0..K−1, then overall (``kind``), then noise.
    """
    x, tau, a_w, eps = (values[n].double() for n in ("x", "tau", "a_w", "eps"))
    beta = float(values["beta"])
    # a^g = τ ⊙ c(spread of the grid's images per dim), c the model's context network
    spread = torch.stack([x[data.grid_image[data.grid_ptr[g]:data.grid_ptr[g + 1]]].std(0, unbiased=False)
                          for g in range(data.n_grids)])
    with torch.no_grad():
        a_g = tau * model.context_net(spread.float()).double()

    def logit_same(d):  # log P(l=1|d) − log P(l=0|d) = β(E(0, d) − E(1, d)), E from eq. 7
        energy_same = GAMMA * torch.clamp(d - XI_P, min=0.0)
        energy_diff = torch.clamp(XI_N - d, min=0.0)
        return beta * (energy_diff - energy_same)

    hit_codes = np.flatnonzero(train)
    pair_hit = data.pairs.hit.numpy()
    n_pairs = max(int((pair_hit == h).sum()) for h in hit_codes)
    n_options = K + overall + 1
    probs = torch.zeros(len(hit_codes), n_options, dtype=torch.float64)
    logits = torch.zeros(len(hit_codes), n_pairs, n_options, dtype=torch.float64)
    labels = torch.zeros(len(hit_codes), n_pairs, dtype=torch.float64)
    mask = torch.zeros(len(hit_codes), n_pairs, dtype=torch.bool)
    for row, h in enumerate(hit_codes):
        worker, grid = int(data.hits["worker"].iloc[h]), int(data.hits["grid"].iloc[h])
        pi = (a_w[worker] + a_g[grid]) / (a_w[worker] + a_g[grid]).sum()
        if overall:
            rho = values["rho"].double()
            probs[row] = torch.cat([(1 - eps) * (1 - rho) * pi, ((1 - eps) * rho).reshape(1), eps.reshape(1)])
        else:
            probs[row] = torch.cat([(1 - eps) * pi, eps.reshape(1)])
        idx = np.flatnonzero(pair_hit == h)
        i, j = data.pairs.i[idx], data.pairs.j[idx]
        label = data.pairs.label[idx].double()
        diff = x[i] - x[j]
        columns = [logit_same(diff.abs())]  # (P_h, K): attribute k alone
        if overall:
            columns.append(logit_same(torch.sqrt((pi * diff ** 2).sum(-1))).unsqueeze(-1))
        # noise: Beta-Bernoulli by the chain rule, P(l_t = 1 | l_<t) = (u + same so far) / (u + v + t)
        same_before = torch.cat([torch.zeros(1, dtype=torch.float64), label.cumsum(0)[:-1]])
        diff_before = torch.arange(len(idx), dtype=torch.float64) - same_before
        columns.append((torch.log(NOISE_U + same_before) - torch.log(NOISE_V + diff_before)).unsqueeze(-1))
        logits[row, :len(idx)] = torch.cat(columns, -1)
        labels[row, :len(idx)], mask[row, :len(idx)] = label, True
    return probs, logits, labels, mask


def _enumerated_log_marginal(probs, logits, labels, mask) -> float:
    """log Σ_z P(z) P(labels | z) over all HITs given, by Pyro's enumeration of z_h ~ Categorical(probs_h)."""
    n_hits, n_pairs, _ = logits.shape

    @config_enumerate
    def model():
        with pyro.plate("hits", n_hits, dim=-2):
            z = pyro.sample("z", dist.Categorical(probs.unsqueeze(-2)))
            with pyro.plate("pairs", n_pairs, dim=-1):
                logit = Vindex(logits)[torch.arange(n_hits).unsqueeze(-1), torch.arange(n_pairs), z]
                pyro.sample("label", dist.Bernoulli(logits=logit).mask(mask), obs=labels)

    def guide():  # z is enumerated; there is nothing else to guess
        pass

    return -TraceEnum_ELBO(max_plate_nesting=2).loss(model, guide)


def _reference_per_hit(tables) -> torch.Tensor:
    probs, logits, labels, mask = tables
    return torch.tensor([_enumerated_log_marginal(probs[h:h + 1], logits[h:h + 1], labels[h:h + 1], mask[h:h + 1])
                         for h in range(len(probs))], dtype=torch.float64)


def _setup(crowd, variant: str, seed: int, beta: float):
    data, train = crowd
    pyro.clear_param_store()
    model = BayesianCEN(data, train, K=K, variant=variant)
    model.noise_u = PyroParam(torch.tensor(NOISE_U), constraint=dist.constraints.positive)
    model.noise_v = PyroParam(torch.tensor(NOISE_V), constraint=dist.constraints.positive)
    values = _latents(model, seed, beta)
    tables = _reference_tables(model, data, train, values, overall=variant == "kind")
    return model, values, tables


CASES = [("choice", 0, 0.05), ("choice", 1, 0.5), ("kind", 0, 0.05), ("kind", 2, 0.5)]


@pytest.mark.parametrize("variant, seed, beta", CASES)
def test_summed_out_choice_equals_pyro_enumeration(crowd, variant, seed, beta):
    model, values, tables = _setup(crowd, variant, seed, beta)
    noise = float(model.noise_u.detach()), float(model.noise_v.detach())
    assert noise == pytest.approx((NOISE_U, NOISE_V))
    reference = _reference_per_hit(tables)
    ours = _model_per_hit(model, values)
    torch.testing.assert_close(ours, reference, rtol=RTOL, atol=0.0)
    # all HITs at once (the vectorised plate) is the sum of the HITs one at a time
    assert _enumerated_log_marginal(*tables) == pytest.approx(float(reference.sum()), rel=RTOL)
    # a minibatch of HITs takes other code paths (rows of the sparse count matrices, the HITs' own pairs)
    hits = torch.tensor([5, 0, 3, len(reference) - 1])
    torch.testing.assert_close(_model_per_hit(model, values, hits), reference[hits], rtol=RTOL, atol=0.0)


@pytest.mark.parametrize("variant", ["choice", "kind"])
def test_the_enumeration_check_catches_a_wrong_weight_or_likelihood(crowd, variant):
    """Every option carries posterior weight in some HIT, so mis-weighting any one of them in the
    reference (×1.5, renormalised), or swapping the noise option's u and v, fails the comparison."""
    model, values, tables = _setup(crowd, variant, 0, 0.05)
    ours = _model_per_hit(model, values)
    probs, logits, labels, mask = tables
    for option in range(probs.shape[-1]):
        wrong = probs.clone()
        wrong[:, option] *= 1.5
        wrong = wrong / wrong.sum(-1, keepdim=True)
        with pytest.raises(AssertionError):
            torch.testing.assert_close(ours, _reference_per_hit((wrong, logits, labels, mask)), rtol=RTOL, atol=0.0)
    swapped = logits.clone()
    n_same = torch.cat([torch.zeros(len(labels), 1, dtype=labels.dtype), (labels * mask).cumsum(1)[:, :-1]], 1)
    n_diff = torch.arange(labels.shape[1], dtype=labels.dtype) - n_same
    swapped[..., -1] = torch.log(NOISE_V + n_same) - torch.log(NOISE_U + n_diff)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(ours, _reference_per_hit((probs, swapped, labels, mask)), rtol=RTOL, atol=0.0)


# ----- 2. RadialLaplace ------------------------------------------------------------------------------------

def _density(rate: float, points: torch.Tensor) -> torch.Tensor:
    return RadialLaplace(torch.tensor(rate, dtype=torch.float64), points.shape[-1]).log_prob(points).exp()


def _radial_moment(rate: float, dim: int, power: int) -> float:
    """E||x||^power under the density: ∫ ρ^power p(ρ e_1) · |S^{dim−1}| ρ^{dim−1} dρ, by quadrature on ρ."""
    rho = torch.linspace(0.0, 60.0 / rate, 200_001, dtype=torch.float64)
    points = torch.zeros(len(rho), dim, dtype=torch.float64)
    points[:, 0] = rho
    sphere = 2 * math.pi ** (dim / 2) / math.gamma(dim / 2)
    return float(torch.trapezoid(rho ** power * _density(rate, points) * sphere * rho ** (dim - 1), rho))


@pytest.mark.parametrize("rate", [0.3, 1.0, 4.0])
def test_radial_laplace_density_integrates_to_one_in_1d_and_2d(rate):
    x = torch.linspace(-60.0 / rate, 60.0 / rate, 400_001, dtype=torch.float64)
    assert float(torch.trapezoid(_density(rate, x.unsqueeze(-1)), x)) == pytest.approx(1.0, abs=1e-6)
    # 2-D on a Cartesian grid (not the polar form the normaliser is derived in); the cusp at 0 and the
    # tails beyond the box cost ~1e-4 at this resolution
    g = torch.linspace(-30.0 / rate, 30.0 / rate, 3001, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="ij")
    p = _density(rate, torch.stack([gx, gy], -1))
    assert float(torch.trapezoid(torch.trapezoid(p, g, dim=1), g)) == pytest.approx(1.0, abs=1e-3)


def test_radial_laplace_density_integrates_to_one_in_5d():
    """Importance sampling from a product of 1-D Laplaces of half the rate: its tails are heavier than
    the target's (r/2·||x||₁ ≤ r/2·√5·||x||₂ < 2r·||x||₂), so the weights have finite variance."""
    rate, dim, n = 1.5, 5, 400_000
    torch.manual_seed(0)
    proposal = torch.distributions.Laplace(torch.zeros(dim, dtype=torch.float64), torch.tensor(2.0 / rate))
    draws = proposal.sample((n,))
    weights = (RadialLaplace(torch.tensor(rate, dtype=torch.float64), dim).log_prob(draws)
               - proposal.log_prob(draws).sum(-1)).exp()
    se = float(weights.std()) / math.sqrt(n)
    assert se < 0.01 and abs(float(weights.mean()) - 1.0) < 5 * se


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_radial_laplace_samples_have_the_density_moments(dim):
    """Sample means of ||x||, ||x||² and x_1² against the density's (numerical integration), within
    5 standard errors of the mean; and a direction with no preferred side (E x = 0)."""
    rate, n = 0.8, 200_000
    torch.manual_seed(1)
    x = RadialLaplace(torch.full((2,), rate, dtype=torch.float64), dim).sample((n // 2,)).reshape(n, dim)
    assert x.shape == (n, dim) and x.dtype == torch.float64
    radius = torch.linalg.vector_norm(x, dim=-1)
    expected = {"radius": _radial_moment(rate, dim, 1), "radius²": _radial_moment(rate, dim, 2),
                "x_1²": _radial_moment(rate, dim, 2) / dim}  # the density depends on ||x|| only
    if dim == 2:  # x_1² straight from a Cartesian grid, without the symmetry argument
        g = torch.linspace(-40.0 / rate, 40.0 / rate, 2001, dtype=torch.float64)
        gx, gy = torch.meshgrid(g, g, indexing="ij")
        p = _density(rate, torch.stack([gx, gy], -1))
        expected["x_1²"] = float(torch.trapezoid(torch.trapezoid(gx ** 2 * p, g, dim=1), g))
    observed = {"radius": radius, "radius²": radius ** 2, "x_1²": x[:, 0] ** 2}
    for name, values in observed.items():
        se = float(values.std()) / math.sqrt(n)
        assert abs(float(values.mean()) - expected[name]) < 5 * se, (name, float(values.mean()), expected[name], se)
    mean = x.mean(0)
    se = x.std(0) / math.sqrt(n)
    assert bool((mean.abs() < 5 * se).all())


def test_lanczos_finds_the_same_leading_eigenpairs_as_the_full_decomposition(monkeypatch):
    """Above FULL_EIGH_IMAGES the spectral start reads the leading eigenpairs by Lanczos; they must be
    the full decomposition's (vectors up to sign), or large crowds would start somewhere else."""
    from models import spectral

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 6, size=(300, 3))  # a co-association-like matrix: a sum of block matrices
    C = sum((b[:, None] == b[None, :]).astype(float) for b in blocks.T) + 0.05 * rng.standard_normal((300, 300))
    C = (C + C.T) / 2
    exact = spectral.leading_eigenpairs(C, 8)
    monkeypatch.setattr(spectral, "FULL_EIGH_IMAGES", 100)
    lanczos = spectral.leading_eigenpairs(C, 8)
    np.testing.assert_allclose(lanczos[0], exact[0], rtol=1e-8)
    np.testing.assert_allclose(np.abs((lanczos[1] * exact[1]).sum(0)), 1.0, atol=1e-8)
