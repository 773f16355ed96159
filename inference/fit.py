"""Fit a Bayesian CEN by stochastic variational inference.

Mean-field Normal guide (``AutoNormal``) by default: the posterior is over
~K·(images + workers + grids) continuous values, each weakly coupled to the
others through many pairs, which mean-field captures well at SVI speed; the
discrete attribute choice of the ``choice`` variant is summed out exactly in
the model, so the guide never has to approximate it. ``AutoDelta`` gives the
MAP mode (with ``paper_loss=True`` its objective is the paper's eq. 8).

Minibatches are whole training HITs (all of them when ``batch_hits`` is None
or at least the number of HITs) drawn from one permutation per epoch. Fits
show a progress bar, and with ``checkpoint`` can be stopped (Ctrl-C) and
resumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_median
from tqdm.auto import tqdm

from cen_bayes.crowd import Pairs
from models.cen import BayesianCEN
from models.spectral import spectral_init


@dataclass
class FitResult:
    guide: torch.nn.Module
    losses: list[float] = field(default_factory=list)  # -ELBO per step, per training pair
    seconds: float = 0.0
    interrupted: bool = False
    steps: int = 0  # the schedule's length and starting step size, defaults resolved
    lr: float = 0.0


def _initialiser(model: BayesianCEN, seed: int):
    """init_loc_fn: embeddings at the spectral start (``models.spectral``), scaled to the
    prior's spread; activations at their prior medians, or, for the paper's nearly flat
    priors (tiny λ's), at moderate values like a fresh network's output."""
    pairs = Pairs(worker=model.pair_worker, grid=model.pair_grid, hit=model.pair_hit,
                  i=model.pair_i, j=model.pair_j, label=model.label)
    start = torch.as_tensor(spectral_init(pairs, model.n_images, model.K, seed), dtype=torch.float32)

    def init(site):
        like = site["fn"].sample().detach()  # shape, dtype and device of the site
        if site["name"] == "x":
            return (model.embed_scale * start).to(like)
        if model.paper_loss:
            return 0.5 + 0.1 * torch.rand_like(like)
        return init_to_median(site)
    return init


def make_guide(model: BayesianCEN, map_mode: bool, seed: int = 0) -> torch.nn.Module:
    init = _initialiser(model, seed)
    if map_mode:
        return AutoDelta(model, init_loc_fn=init)
    return AutoNormal(model, init_loc_fn=init, init_scale=0.05)


def default_lr(model: BayesianCEN, map_mode: bool) -> float:
    """Adam's starting step (it decays ×0.1 over the fit), tuned on simulated retina/celeba.

    The choice variant's embedding moves far from its start (levels end up
    ξ_n apart), and 500 steps at 0.3 reached what 1800 steps at 0.15 did
    (retina held-out accuracy 0.72); the continuous variants' per-grid
    activations diverge at 0.3 (retina mixture 0.54) and are run at 0.1.
    MAP (a point, no sampling noise) takes 0.3.
    """
    return 0.3 if model.variant == "choice" or map_mode else 0.1


def default_steps(map_mode: bool) -> int:
    """SVI: 500 full-batch steps (retina held-out accuracy within 0.01 of 1800 steps);
    MAP of the paper's loss: 200 (retina 0.595 held out, where 500 steps gave 0.603)."""
    return 200 if map_mode else 500


def fit_svi(model: BayesianCEN, *, map_mode: bool = False, steps: int | None = None, lr: float | None = None,
            batch_hits: int | None = None, seed: int = 0, device: str = "cpu", progress: bool = True,
            checkpoint: str | Path | None = None, resume: bool = False,
            noise_warmup: float = 0.8) -> FitResult:
    """Run SVI; returns the guide and the loss trace. Same code on CPU and GPU.

    ``noise_warmup``: share of the steps run with the choice variant's noise
    component switched off. At the start the embedding explains no HIT better
    than the exchangeable noise model does, so with noise on from step 0 most
    HITs go to noise and the embedding gets almost no gradient (measured on
    celeba: 66 % of HITs called noise against 19 % simulated).
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model.to(device)
    guide = make_guide(model, map_mode, seed)
    n_hits = model.n_train_hits
    batch = n_hits if batch_hits is None else min(batch_hits, n_hits)
    generator = torch.Generator().manual_seed(seed)
    full = torch.arange(n_hits, device=device)
    guide(full if batch < n_hits else None)  # build guide parameters on the target device
    lr = default_lr(model, map_mode) if lr is None else lr
    steps = default_steps(map_mode) if steps is None else steps
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1.0 / max(steps, 1)), "clip_norm": 10.0})
    svi = SVI(model, guide, optim, loss=TraceMeanField_ELBO())
    result, start_step = FitResult(guide=guide, steps=steps, lr=lr), 0
    checkpoint = Path(checkpoint) if checkpoint else None
    if resume and checkpoint and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        pyro.get_param_store().set_state(state["params"])
        optim.set_state(state["optim"])
        result.losses, start_step = state["losses"], state["step"]
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def save(step):
        if checkpoint:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"params": pyro.get_param_store().get_state(), "optim": optim.get_state(),
                        "losses": result.losses, "step": step, "generator": generator.get_state(),
                        "torch_rng": torch.get_rng_state()}, checkpoint)

    order, cursor = None, n_hits
    started = time.perf_counter()
    bar = tqdm(range(start_step, steps), desc="SVI" if not map_mode else "MAP", disable=not progress,
               initial=start_step, total=steps, dynamic_ncols=True)
    step = start_step
    try:
        for step in bar:
            model.noise_enabled = step >= noise_warmup * steps
            if batch < n_hits:
                if cursor + batch > n_hits:
                    order, cursor = torch.randperm(n_hits, generator=generator).to(device), 0
                hits, cursor = order[cursor: cursor + batch], cursor + batch
                loss = svi.step(hits)
            else:
                loss = svi.step(None)
            result.losses.append(loss / model.n_train_pairs)
            if step % 25 == 0:
                bar.set_postfix(loss_per_pair=f"{result.losses[-1]:.4f}")
            if checkpoint and (step + 1) % 500 == 0:
                save(step + 1)
        step = steps
    except KeyboardInterrupt:
        result.interrupted = True
        save(step)
        bar.write(f"stopped at step {step}; " + (f"resume with --resume (checkpoint {checkpoint})"
                                                  if checkpoint else "no checkpoint kept"))
    finally:
        bar.close()
    model.noise_enabled = True
    if checkpoint and not result.interrupted:
        save(step)
    result.seconds = time.perf_counter() - started
    return result
