"""The MAP mode's objective is the paper's loss (eq. 8), value and gradients."""

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from cen_bayes.crowd import CrowdData
from inference.fit import make_guide
from models.cen import BayesianCEN


def crowd(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for grid in range(12):
        images = rng.choice(15, size=6, replace=False)
        worker = rng.integers(4)
        rows += [(f"w{worker}", f"g{grid}", f"i{im}", str(rng.integers(2))) for im in images]
    return CrowdData.from_source(pd.DataFrame(rows, columns=["worker_id", "grid_id", "image_id", "group"]))


def eq8_sum(model, x, a_w, a_g, gamma=5.0, xi_p=1.0, xi_n=6.0, lam1=5e-6, lam2=1e-3):
    """Eq. 8 written out from the paper, summed over the training pairs."""
    i, j, w, g, l = model.pair_i, model.pair_j, model.pair_worker, model.pair_grid, model.label
    a = {"mixture": lambda: a_w[w] + a_g[g], "worker": lambda: a_w[w], "context": lambda: a_g[g]}[model.variant]()
    square = ((a * (x[i] - x[j])) ** 2).sum(-1)
    d = torch.where(square > 0, square.clamp(min=1e-30).sqrt(), 0.0)  # gradient 0 at d = 0
    per_pair = (gamma * l * torch.clamp(d - xi_p, min=0) + (1 - l) * torch.clamp(xi_n - d, min=0)
                + lam1 * a.abs().sum(-1) + lam2 * x[i].norm(dim=-1) + lam2 * x[j].norm(dim=-1))
    return per_pair.sum()


@pytest.mark.parametrize("variant", ["mixture", "worker", "context"])
def test_map_objective_equals_eq8_up_to_a_constant(variant):
    pyro.clear_param_store()
    torch.manual_seed(0)
    data = crowd()
    train = np.ones(data.n_hits, dtype=bool)
    train[:2] = False  # held-out HITs must not enter the loss
    # float64 so that only the mapping, not float32 summation order, can make the two differ
    model = BayesianCEN(data, train, K=3, variant=variant, paper_loss=True).double()
    guide = make_guide(model, map_mode=True)
    guide(None)
    params = [p for _, p in guide.named_parameters()] + list(model.context_net.parameters())

    def both():
        objective = Trace_ELBO().differentiable_loss(model, guide, None)
        point = guide(None)
        a_g = model.context_net(model.grid_sets)
        return objective, eq8_sum(model, point["x"], point.get("a_w"), a_g)

    gaps = []
    for trial in range(2):
        with torch.no_grad():  # move to a different point in parameter space
            for p in params:
                p.add_(0.3 * torch.randn_like(p))
        objective, paper = both()
        assert paper.item() > 1.0  # a loss with real energy terms, not a trivial zero
        g_obj = torch.autograd.grad(objective, params, allow_unused=True)
        g_pap = torch.autograd.grad(paper, params, allow_unused=True)
        for a, b in zip(g_obj, g_pap):
            a = torch.zeros(()) if a is None else a
            b = torch.zeros(()) if b is None else b
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        gaps.append((objective - paper).item())
    # the gap is the priors' log-normalisers: the same at every point
    assert gaps[0] == pytest.approx(gaps[1], rel=1e-5, abs=1e-3)


def test_paper_priors_are_the_eq8_rates():
    data = crowd()
    model = BayesianCEN(data, np.ones(data.n_hits, dtype=bool), K=3, variant="worker", paper_loss=True)
    trace = pyro.poutine.trace(model).get_trace(None)
    n_w = torch.bincount(data.pairs.worker, minlength=data.n_workers).float()
    torch.testing.assert_close(trace.nodes["a_w"]["fn"].base_dist.rate[:, 0], 5e-6 * n_w.clamp(min=1))
