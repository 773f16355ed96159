"""Fit a Bayesian CEN by stochastic variational inference.

Mean-field Normal guide (``AutoNormal``) by default: the posterior is over
~K·(images + workers + grids) continuous values, each weakly coupled to the
others through many pairs, which mean-field captures well at SVI speed; the
discrete attribute choice of the ``choice`` variant is summed out exactly in
the model, so the guide never has to approximate it. ``AutoDelta`` gives the
MAP mode (with ``paper_loss=True`` its objective is the paper's eq. 8).

Minibatches are whole training HITs (all of them when ``batch_hits`` is None
or at least the number of HITs) drawn from one permutation per epoch. Fits
show a progress bar, and with ``checkpoint`` save their state as they go,
stop cleanly on Ctrl-C or SIGTERM and resume to the same result.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal
from tqdm.auto import tqdm

from cen_bayes.atomic import atomic_path
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
        return model.priors.initial_value(site, like)
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
    return 0.3 if model.sums_out_choice or map_mode else 0.1


def default_steps(map_mode: bool) -> int:
    """SVI: 500 full-batch steps (retina held-out accuracy within 0.01 of 1800 steps);
    MAP of the paper's loss: 200 (retina 0.595 held out, where 500 steps gave 0.603)."""
    return 200 if map_mode else 500


class FitDiverged(RuntimeError):
    """The ELBO (or a parameter) became NaN or infinite; the last finite checkpoint is kept."""


class StopSignal:
    """Turn the first SIGINT / SIGTERM into a flag the loop reads between steps.

    A signal that lands inside ``svi.step`` would otherwise leave the
    parameters half-updated; waiting for the step to end makes the checkpoint
    a whole step, so resuming repeats the uninterrupted run exactly. A second
    signal acts as usual (Ctrl-C twice stops at once). Only the main thread
    can own signal handlers; elsewhere this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signum
        self._restore()

    def _restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        self._restore()


@contextmanager
def deterministic():
    """Same seed, same data, same device -> the same fit, bit for bit, however many threads.

    On CPU, the backward of a gather (``x[index]``, as in the grid spreads)
    accumulates with ``index_put_`` across threads in whatever order they
    finish: measured on retina with 2 threads, two runs agreed in every loss
    of 20 steps but not in the parameters, and after 500 steps held-out
    accuracy moved by ~0.01. Torch's deterministic mode picks an ordered
    implementation; ``warn_only`` keeps an op without one (some CUDA kernels)
    running, with a warning, rather than failing the fit.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _load_params(saved: dict, checkpoint: Path) -> None:
    """Copy saved values into the parameters the model and guide already hold.

    In place, not ``ParamStore.set_state``: a plain ``nn.Module`` inside the
    model (the context network) keeps using its own tensors, which
    ``set_state`` would replace in the store only, leaving it untrained.
    """
    store = dict(pyro.get_param_store().named_parameters())
    if set(store) != set(saved):
        raise ValueError(f"{checkpoint} holds the parameters of another model "
                         f"(differs in {sorted(set(store) ^ set(saved))[:3]})")
    with torch.no_grad():
        for name, value in store.items():
            value.copy_(saved[name])


def _finite_params() -> bool:
    return all(bool(torch.isfinite(value).all()) for value in pyro.get_param_store().values())


def fit_svi(model: BayesianCEN, *, map_mode: bool = False, steps: int | None = None, lr: float | None = None,
            batch_hits: int | None = None, seed: int = 0, device: str = "cpu", progress: bool = True,
            checkpoint: str | Path | None = None, resume: bool = False, checkpoint_every: int = 100,
            noise_warmup: float = 0.8) -> FitResult:
    """Run SVI; returns the guide and the loss trace. Same code on CPU and GPU.

    ``checkpoint``: a file that gets the whole fit state (parameters, Adam's
    moments, the random generators, the minibatch order) every
    ``checkpoint_every`` steps, at the end and when SIGINT / SIGTERM stops the
    fit (``interrupted`` is then set); ``resume=True`` continues from it to the
    same result as an uninterrupted run. Without a checkpoint, Ctrl-C raises
    KeyboardInterrupt as usual. A non-finite ELBO or parameter raises
    ``FitDiverged`` naming the step, without overwriting the last checkpoint.

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
    result, step = FitResult(guide=guide, steps=steps, lr=lr), 0
    order, cursor = None, n_hits  # the epoch's HIT permutation and how far into it the fit is
    checkpoint = Path(checkpoint) if checkpoint else None
    if resume and checkpoint and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["steps"] != steps:
            raise ValueError(f"{checkpoint} belongs to a fit of {state['steps']} steps, not {steps}")
        _load_params(state["params"], checkpoint)
        optim.set_state(state["optim"])
        result.losses, step, order, cursor = state["losses"], state["step"], state["order"], state["cursor"]
        generator.set_state(state["generator"])
        pyro.util.set_rng_state(state["rng"])

    def save(at_step):
        if not _finite_params():  # never replace a good checkpoint with a diverged one
            raise FitDiverged(diverged_message(f"a parameter became NaN or infinite by step {at_step}",
                                               lr, checkpoint))
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(checkpoint) as partial:
            params = {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}
            torch.save({"params": params, "optim": optim.get_state(), "losses": result.losses, "step": at_step,
                        "steps": steps, "order": order, "cursor": cursor, "generator": generator.get_state(),
                        "rng": pyro.util.get_rng_state()}, partial)

    started = time.perf_counter()
    bar = tqdm(total=steps, initial=step, desc="SVI" if not map_mode else "MAP", disable=not progress,
               dynamic_ncols=True)
    with bar, deterministic(), StopSignal() if checkpoint else nullcontext() as stop:
        while step < steps:
            noise = step >= noise_warmup * steps
            if batch < n_hits:
                if cursor + batch > n_hits:
                    order, cursor = torch.randperm(n_hits, generator=generator).to(device), 0
                hits, cursor = order[cursor: cursor + batch], cursor + batch
                loss = svi.step(hits, noise)
            else:
                loss = svi.step(None, noise)
            if not math.isfinite(loss):
                raise FitDiverged(diverged_message(f"the ELBO became {loss} at step {step + 1}", lr, checkpoint))
            result.losses.append(loss / model.n_train_pairs)
            step += 1
            bar.update()
            if step % 25 == 1:
                bar.set_postfix(loss_per_pair=f"{result.losses[-1]:.4f}")
            if checkpoint and (step % checkpoint_every == 0 or step == steps):
                save(step)
            if stop and stop.received is not None and step < steps:
                result.interrupted = True
                save(step)
                bar.write(f"stopped by {signal.Signals(stop.received).name} at step {step} of {steps}; "
                          f"the checkpoint {checkpoint} resumes it")
                break
    result.seconds = time.perf_counter() - started
    return result


def diverged_message(what: str, lr: float, checkpoint: Path | None) -> str:
    kept = (f"the last good checkpoint is kept in {checkpoint}" if checkpoint and checkpoint.exists()
            else "no checkpoint was saved before it")
    return (f"the fit diverged: {what}; try a smaller learning rate (--lr, this fit used {lr:g}); {kept}")
