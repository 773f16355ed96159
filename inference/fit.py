"""Fit a Bayesian CEN by stochastic variational inference.

Mean-field Normal guide (``AutoNormal``) by default: the posterior is over
~K·(images + workers + grids) continuous values, each weakly coupled to the
others through many pairs, which mean-field captures well at SVI speed; the
discrete attribute choice of the ``choice`` variant is summed out exactly in
the model, so the guide never has to approximate it. ``AutoDelta`` gives the
MAP mode (with ``paper_loss=True`` its objective is the paper's eq. 8).

Minibatches are whole training HITs (all of them when ``batch_hits`` is None
or at least the number of HITs). The loop itself (minibatch order, progress,
checkpoints, a clean stop on Ctrl-C or SIGTERM, resume to the same result) is
``models.svi_trainer``, which BCC shares; this module holds what is the
CEN's own: its guide, its starting point and its schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal

from cen_bayes.crowd import Pairs
from models.cen import BayesianCEN
from models.spectral import spectral_init
from models.svi_trainer import SVIRun, run_svi


@dataclass
class FitResult(SVIRun):
    """The SVI run (its losses are per training pair; ``steps`` and ``lr`` with defaults resolved) and the
    guide it trained."""

    guide: torch.nn.Module | None = None


def _initialiser(model: BayesianCEN, seed: int, start_pairs: Pairs | None = None):
    """init_loc_fn: embeddings at the spectral start (``models.spectral``), scaled to the
    prior's spread; activations at their prior medians, or, for the paper's nearly flat
    priors (tiny λ's), at moderate values like a fresh network's output. ``start_pairs``: the pairs
    the spectral start reads (default the model's own; a shard's model is given all training pairs,
    so every process starts where one process would)."""
    pairs = start_pairs or Pairs(worker=model.pair_worker, grid=model.pair_grid, hit=model.pair_hit,
                                 i=model.pair_i, j=model.pair_j, label=model.label)
    start = torch.as_tensor(spectral_init(pairs, model.n_images, model.K, seed), dtype=torch.float32)

    def init(site):
        like = site["fn"].sample().detach()  # shape, dtype and device of the site
        if site["name"] == "x":
            return (model.embed_scale * start).to(like)
        return model.priors.initial_value(site, like)
    return init


def make_guide(model: BayesianCEN, map_mode: bool, seed: int = 0, start_pairs: Pairs | None = None) -> torch.nn.Module:
    init = _initialiser(model, seed, start_pairs)
    if map_mode:
        return AutoDelta(model, init_loc_fn=init)
    return AutoNormal(model, init_loc_fn=init, init_scale=0.05)


def default_lr(model: BayesianCEN, map_mode: bool) -> float:
    """Adam's starting step (it decays ×0.1 over the fit), tuned on simulated retina/celeba.

    The choice variant's embedding moves far from its start (levels end up
    ξ_n apart), and 500 steps at 0.3 reached the held-out accuracy of 1800
    steps at 0.15 on retina; the continuous variants' per-grid activations
    diverge at 0.3 (the retina mixture's held-out accuracy drops) and are run
    at 0.1. MAP (a point, no sampling noise) takes 0.3. (Measured:
    benchmarks/README.md, "Measurements behind the defaults".)
    """
    return 0.3 if model.sums_out_choice or map_mode else 0.1


def default_steps(map_mode: bool) -> int:
    """SVI: 500 full-batch steps (on retina, held-out accuracy about that of 1800 steps);
    MAP of the paper's loss: 200 (on retina, 500 steps gain little held-out accuracy).
    Measured: benchmarks/README.md, "Measurements behind the defaults"."""
    return 200 if map_mode else 500


def fit_svi(model: BayesianCEN, *, map_mode: bool = False, steps: int | None = None, lr: float | None = None,
            batch_hits: int | None = None, seed: int = 0, device: str = "cpu", progress: bool = True,
            checkpoint: str | Path | None = None, resume: bool = False, checkpoint_every: int = 100,
            noise_warmup: float = 0.8, start_pairs: Pairs | None = None, sharded: bool = False) -> FitResult:
    """Run SVI (``models.svi_trainer.run_svi``); returns the guide and the loss trace. Same code on CPU and GPU.

    ``checkpoint`` / ``resume``: the whole fit state, saved as it goes and on
    Ctrl-C / SIGTERM (``interrupted`` is then set), resumed to the same result
    as an uninterrupted run; a non-finite ELBO or parameter raises
    ``FitDiverged`` (``run_svi``).

    ``noise_warmup``: share of the steps run with the choice variant's noise
    component switched off. At the start the embedding explains no HIT better
    than the exchangeable noise model does, so with noise on from step 0 most
    HITs go to noise and the embedding gets almost no gradient (benchmarks/README.md).

    ``sharded``: ``model`` holds this process's shard of a data-parallel fit (its ``plate_sizes``
    the whole training set's); ``batch_hits`` stays the whole minibatch, shared among the processes.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model.to(device)
    guide = make_guide(model, map_mode, seed, start_pairs)
    n_hits = model.n_train_hits
    if sharded and batch_hits is not None:  # this process's part of the whole minibatch
        batch_hits = max(1, round(batch_hits * n_hits / model.plate_hits))
    batch = n_hits if batch_hits is None else min(batch_hits, n_hits)
    guide(torch.arange(n_hits, device=device) if batch < n_hits else None)  # guide parameters on the device
    lr = default_lr(model, map_mode) if lr is None else lr
    steps = default_steps(map_mode) if steps is None else steps
    run = run_svi(model, guide, n_units=n_hits, batch=batch, steps=steps, lr=lr, seed=seed,
                  loss_scale=model.plate_pairs, step_args=lambda step: (step >= noise_warmup * steps,), sharded=sharded,
                  desc="MAP" if map_mode else "SVI", progress=progress, checkpoint=checkpoint, resume=resume,
                  checkpoint_every=checkpoint_every, device=device)
    return FitResult(**vars(run), guide=guide)
