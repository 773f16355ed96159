"""Fit a Bayesian CEN by stochastic variational inference.

Mean-field Normal guide (``AutoNormal``) by default: the posterior is over
~K·(images + workers + grids) continuous values, each weakly coupled to the
others through many pairs, which mean-field captures well at SVI speed; the
discrete attribute choice of the ``choice`` variant is summed out exactly in
the model, so the guide never has to approximate it. ``AutoDelta`` gives the
MAP mode (with ``paper_loss=True`` its objective is the paper's eq. 8).

Minibatches are whole training HITs. Up to ``FULL_BATCH_PAIRS`` training
pairs every step scores them all; above it, unless ``batch_hits`` is given,
each step scores a minibatch that shows each image a few times
(``default_batch_hits``), so a step's cost follows the images, not the
pairs, and a campaign of millions of pairs fits in minutes. The loop itself (minibatch order, progress,
checkpoints, a clean stop on Ctrl-C or SIGTERM, resume to the same result) is
``models.svi_trainer``, which BCC shares; this module holds what is the
CEN's own: its guide, its starting point and its schedule.
"""

from __future__ import annotations

import math
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
    """The SVI run (its losses are per training pair; ``steps`` and ``lr`` with defaults resolved), the
    guide it trained and its minibatch size (``batch_hits``, resolved; None: all HITs every step)."""

    guide: torch.nn.Module | None = None
    batch_hits: int | None = None


def _initialiser(model: BayesianCEN, seed: int, start_pairs: Pairs | None = None, spectral_start: bool = True):
    """init_loc_fn: embeddings at the spectral start (``models.spectral``), scaled to the
    prior's spread; activations at their prior medians, or, for the paper's nearly flat
    priors (tiny λ's), at moderate values like a fresh network's output. ``start_pairs``: the pairs
    the spectral start reads (default the model's own; a shard's model is given all training pairs,
    so every process starts where one process would). ``spectral_start=False`` starts the embeddings
    at a prior draw instead, for a guide whose values are about to be overwritten: the spectral start
    is an eigendecomposition of an images × images matrix, seconds on thousands of images."""
    start = None
    if spectral_start:
        pairs = start_pairs or Pairs(worker=model.pair_worker, grid=model.pair_grid, hit=model.pair_hit,
                                     i=model.pair_i, j=model.pair_j, label=model.label)
        start = torch.as_tensor(spectral_init(pairs, model.n_images, model.K, seed), dtype=torch.float32)

    def init(site):
        like = site["fn"].sample().detach()  # shape, dtype and device of the site
        if site["name"] == "x":
            return like if start is None else (model.embed_scale * start).to(like)
        return model.priors.initial_value(site, like)
    return init


def make_guide(model: BayesianCEN, map_mode: bool, seed: int = 0, start_pairs: Pairs | None = None,
               spectral_start: bool = True) -> torch.nn.Module:
    init = _initialiser(model, seed, start_pairs, spectral_start)
    if map_mode:
        return AutoDelta(model, init_loc_fn=init)
    return AutoNormal(model, init_loc_fn=init, init_scale=0.05)


def default_lr(model: BayesianCEN, map_mode: bool, minibatch: bool = False) -> float:
    """Adam's starting step (it decays ×0.1 over the fit), tuned on simulated retina/celeba.

    The choice variant's embedding moves far from its start (levels end up
    ξ_n apart), and 500 steps at 0.3 reached the held-out accuracy of 1800
    steps at 0.15 on retina; the continuous variants' per-grid activations
    diverge at 0.3 (the retina mixture's held-out accuracy drops) and are run
    at 0.1. MAP (a point, no sampling noise) takes 0.3. Minibatches
    (``default_batch_hits``) add their own gradient noise: at 0.3 a 10 M-pair
    crowd settled 2 points of accuracy under the 0.1 and 0.2 fits, and 0.2 was
    within 0.001 of the best accuracy on birds, 1 M and 10 M pairs. (Measured:
    benchmarks/README.md, "Measurements behind the defaults" and "Large crowds".)
    """
    if model.sums_out_choice or map_mode:
        return 0.2 if minibatch else 0.3
    return 0.1


def default_steps(map_mode: bool) -> int:
    """SVI: 500 full-batch steps (on retina, held-out accuracy about that of 1800 steps);
    MAP of the paper's loss: 200 (on retina, 500 steps gain little held-out accuracy).
    Measured: benchmarks/README.md, "Measurements behind the defaults"."""
    return 200 if map_mode else 500


FULL_BATCH_PAIRS = 500_000  # training pairs up to which every step scores all of them
IMAGE_SHOWINGS = 10  # above it: a minibatch shows each image in about this many of its HITs


def default_batch_hits(model: BayesianCEN) -> int | None:
    """HITs per minibatch for ``model``'s whole training set (its ``plate_*`` sizes): None (all) up to
    ``FULL_BATCH_PAIRS`` pairs; above, enough HITs to show each image about ``IMAGE_SHOWINGS`` times.

    A full-batch step costs time in proportion to the pairs, and the default 500
    steps then grow past an hour on a campaign of 10 M pairs. What a minibatch
    must keep is each image's gradient: an image's embedding learns only from
    the minibatch's HITs that show it, so the minibatch grows with the images,
    not with the pairs. On simulated birds (1,000 images, 0.7 M training
    pairs, K = 10) and on birds-like crowds of 1 M and 10 M pairs these
    minibatches reached the full-batch held-out accuracy in a third of the
    time or less (benchmarks/README.md, "Large crowds"). Below the threshold
    a full step costs little and full batches stay the measured default.
    """
    if model.plate_pairs <= FULL_BATCH_PAIRS:
        return None
    pairs_per_hit = model.plate_pairs / model.plate_hits
    images_per_hit = (1.0 + math.sqrt(1.0 + 8.0 * pairs_per_hit)) / 2.0  # S images make S(S − 1)/2 pairs
    batch = math.ceil(IMAGE_SHOWINGS * model.n_images / images_per_hit)
    return batch if batch < model.plate_hits else None


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

    ``batch_hits``: HITs per minibatch; None: ``default_batch_hits``, all of them on all but large crowds.

    ``sharded``: ``model`` holds this process's shard of a data-parallel fit (its ``plate_sizes``
    the whole training set's); ``batch_hits`` stays the whole minibatch, shared among the processes.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model.to(device)
    guide = make_guide(model, map_mode, seed, start_pairs)
    n_hits = model.n_train_hits
    batch_hits = default_batch_hits(model) if batch_hits is None else batch_hits
    every_hit = batch_hits is None or batch_hits >= model.plate_hits  # full batch (all processes together)
    whole_batch = None if every_hit else batch_hits
    if sharded and batch_hits is not None:  # this process's part of the whole minibatch
        batch_hits = max(1, round(batch_hits * n_hits / model.plate_hits))
    batch = n_hits if batch_hits is None else min(batch_hits, n_hits)
    guide(torch.arange(n_hits, device=device) if batch < n_hits else None)  # guide parameters on the device
    lr = default_lr(model, map_mode, minibatch=not every_hit) if lr is None else lr
    steps = default_steps(map_mode) if steps is None else steps
    run = run_svi(model, guide, n_units=n_hits, batch=batch, steps=steps, lr=lr, seed=seed,
                  loss_scale=model.plate_pairs, step_args=lambda step: (step >= noise_warmup * steps,), sharded=sharded,
                  desc="MAP" if map_mode else "SVI", progress=progress, checkpoint=checkpoint, resume=resume,
                  checkpoint_every=checkpoint_every, device=device)
    return FitResult(**vars(run), guide=guide, batch_hits=whole_batch)
