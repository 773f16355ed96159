"""PSIS k-hat of a guide (Yao et al. 2018), the ELBO trace, and per-HIT uncertainty."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from cen_bayes.metrics import noisy_hit_recovery
from inference.diagnostics import (MAX_TRACE_POINTS, importance_log_ratios, khat_warning, pareto_khat,
                                   thinned_trace)
from inference.hit_uncertainty import attribute_entropy, hit_uncertainty

D, N = 10, 20
Y = torch.randn(N, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1.0
POST_MEAN, POST_SD = Y.sum(0) / (N + 1), (1.0 / (N + 1)) ** 0.5  # x ~ N(0, 1), y_n ~ N(x, 1)


def model():
    x = pyro.sample("x", dist.Normal(torch.zeros(D, dtype=torch.float64), 1.0).to_event(1))
    with pyro.plate("obs", N):
        pyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=Y)


def guide_with(scale):
    def guide():
        pyro.sample("x", dist.Normal(POST_MEAN, POST_SD * scale).to_event(1))
    return guide


def test_khat_tells_a_good_guide_from_a_too_narrow_one():
    exact = importance_log_ratios(model, guide_with(1.0), 100)
    assert pareto_khat(exact) == -math.inf  # every ratio is p(y): q is the posterior
    assert pareto_khat(importance_log_ratios(model, guide_with(1.3), 1000)) < 0.5  # wider: bounded ratios
    narrow = pareto_khat(importance_log_ratios(model, guide_with(0.5), 1000))  # misses the posterior's tails
    assert narrow > 0.7 and khat_warning(narrow).startswith(f"PSIS k-hat {narrow:.2f} > 0.7")
    assert khat_warning(0.4) is None


def test_khat_needs_enough_draws():
    with pytest.raises(ValueError, match="too few"):
        pareto_khat(np.arange(10.0))


def test_thinned_trace_keeps_first_and_last_steps():
    steps, values = thinned_trace(list(np.arange(1234.0)))
    assert len(steps) <= MAX_TRACE_POINTS + 1 and steps[0] == 0 and steps[-1] == 1233
    assert values == [float(s) for s in steps]
    assert thinned_trace([3.0, 2.0]) == ([0, 1], [3.0, 2.0])


def test_hit_uncertainty_flags_noise_and_split_hits():
    p = np.array([[1.0, 0.0, 0.0, 0.0],     # one attribute, sure
                  [0.5, 0.5, 0.0, 0.0],     # split between two dims: entropy log 2, not above it
                  [0.0, 0.0, 0.0, 1.0],     # surely noise: low entropy, still unexplained
                  [0.8, 0.1, 0.0, 0.1],     # one dim likely
                  [0.55, 0.15, 0.15, 0.15]])  # one dim, but high entropy
    out = hit_uncertainty(p, K=3)
    np.testing.assert_allclose(out["entropy"], [0.0, math.log(2), 0.0, attribute_entropy(p[3]),
                                                attribute_entropy(p[4])])
    assert attribute_entropy(p[3]) < math.log(2) < attribute_entropy(p[4])
    np.testing.assert_allclose(out["p_unexplained"], [0.0, 0.5, 1.0, 0.2, 0.45])
    assert out["uncertain"].tolist() == [False, False, True, False, True]


def test_noisy_hit_recovery():
    flagged = [True, True, False, False, True]
    kind = ["random", "none", "off_list", "none", "one_group"]
    out = noisy_hit_recovery(flagged, kind)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["flagged_share"] == pytest.approx(0.6) and out["noisy_share"] == pytest.approx(0.6)
    assert out["flagged_share_by_kind"] == {"none": 0.5, "off_list": 0.0, "one_group": 1.0, "random": 1.0}


def test_khat_is_infinite_when_one_draw_carries_all_the_weight():
    log_ratios = np.concatenate([np.linspace(-5000.0, -1000.0, 99), [0.0]])
    assert pareto_khat(log_ratios) == math.inf and khat_warning(math.inf).startswith("PSIS k-hat inf > 0.7")
