"""The one SVI loop of the project: the Bayesian CEN (``inference.fit``) and BCC
(``models.baselines.bcc``) both train with it.

It owns what every long fit needs and no model should repeat: minibatches of
whole units (HITs, or pairs for BCC) from one seeded permutation per epoch,
ClippedAdam with a step size decaying ×0.1 over the schedule, a progress bar,
checkpoints of the whole state (parameters, Adam's moments, the random
generators, the minibatch order) that resume to the same result as an
uninterrupted run, a clean stop on Ctrl-C / SIGTERM, and a clear error when the
ELBO or a parameter stops being finite. Parameters are the current Pyro param
store's, so a caller that keeps its own scope (``ParamStoreDict.scope``) trains
in it.

**Data-parallel.** Started by ``torchrun`` (a ``torch.distributed`` process
group initialised, as ``inference.svi`` does), every process runs the same
loop and scores its own share of each step's units, passed to the model as
explicit indices, never by plate subsampling (which would draw the same units
on every rank). Either every process holds every unit and takes every
``world``-th unit of the one seeded minibatch (BCC), or (``sharded``, the CEN)
each holds only its shard, with its likelihood scaled to the whole data, and
draws its own minibatches from it. Gradients are summed across processes,
each weighted by its share of the units scored, then every process takes the
same optimiser step: the weighted sum is the gradient one process would get
from the same units, so N processes follow the one-process fit, up to the
order of floating-point sums. Parameters are broadcast from rank 0 before the
first step; only rank 0 shows progress and writes the checkpoint (a shard's
rank its own minibatch order beside it); a stop signal on any rank stops
every rank at the same step.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyro
import torch
import torch.distributed as torch_distributed
from pyro import poutine
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.infer.util import zero_grads
from tqdm.auto import tqdm

from cen_bayes.atomic import atomic_path


@dataclass
class SVIRun:
    """What a run of ``run_svi`` did: the loss trace and how it ended."""

    losses: list[float] = field(default_factory=list)  # -ELBO per step, divided by ``loss_scale``
    seconds: float = 0.0
    interrupted: bool = False
    steps: int = 0
    lr: float = 0.0


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
    finish: on retina with 2 threads, two runs agreed in every early loss but
    not in the parameters, and a full fit's held-out accuracy moved (measured:
    benchmarks/README.md, "Measurements behind the defaults"). Torch's
    deterministic mode picks an ordered implementation; ``warn_only`` keeps an
    op without one (some CUDA kernels) running, with a warning, rather than
    failing the fit.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def load_params(saved: dict, checkpoint: Path) -> None:
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


def finite_params() -> bool:
    return all(bool(torch.isfinite(value).all()) for value in pyro.get_param_store().values())


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process's ``torch.distributed`` group; (0, 1) outside one."""
    if torch_distributed.is_available() and torch_distributed.is_initialized():
        return torch_distributed.get_rank(), torch_distributed.get_world_size()
    return 0, 1


def shared(value):
    """Rank 0's ``value`` on every rank (a run folder named by the time it started, a score only rank 0
    computed); ``value`` itself outside a process group."""
    if process_group()[1] == 1:
        return value
    box = [value]
    torch_distributed.broadcast_object_list(box, src=0)
    return box[0]


class DataParallelStep:
    """One SVI step of a data-parallel fit (the module docstring): this rank's share of the minibatch,
    gradients all-reduced with weights, the same update on every rank."""

    def __init__(self, model, guide, optim, loss, n_units: int, batch: int, device, sharded: bool = False):
        self.model, self.guide, self.optim, self.loss = model, guide, optim, loss
        self.rank, self.world = process_group()
        self.n_units, self.device, self.sharded = n_units, device, sharded
        if not sharded and batch < self.world:
            raise ValueError(f"a minibatch of {batch} units cannot be shared among {self.world} processes: "
                             f"give each process at least one (--batch-hits >= {self.world})")

    def params(self) -> list[torch.Tensor]:
        """Every unconstrained parameter, in the same (name) order on every rank."""
        return [value for _, value in sorted(pyro.get_param_store().named_parameters())]

    def broadcast(self) -> None:
        with torch.no_grad():
            for value in self.params():
                torch_distributed.broadcast(value.data, src=0)

    def step(self, units, *args) -> float:
        if self.sharded:  # the units are this rank's own (None: all of them)
            mine = units
            count = self.n_units if units is None else len(units)
        else:  # every rank holds every unit and takes every world-th of the minibatch
            everything = torch.arange(self.n_units, device=self.device) if units is None else units
            mine = everything[self.rank::self.world]
            count = len(mine)
        with poutine.trace(param_only=True) as capture:
            loss = self.loss.loss_and_grads(self.model, self.guide, mine, *args)
        # the parameters this step used (as ``SVI.step`` updates them), in the same order on every rank; one
        # with no gradient (a term switched off, as the CEN's noise in its warm-up) is left out, as SVI does
        params = [capture.trace.nodes[name]["value"].unconstrained() for name in sorted(capture.trace.nodes)]
        with_grad = [value for value in params if value.grad is not None]
        # one all-reduce of (gradients, loss, units), each weighted by this rank's units: dividing by the
        # total gives every rank the gradient and loss of all ranks' units together
        weighted = torch.cat([*(value.grad.reshape(-1).double() for value in with_grad),
                              torch.tensor([loss, 1.0], dtype=torch.float64, device=self.device)]) * count
        torch_distributed.all_reduce(weighted)
        weighted /= weighted[-1].clone()
        offset = 0
        for value in with_grad:
            value.grad = weighted[offset: offset + value.numel()].view_as(value).to(value.dtype)
            offset += value.numel()
        self.optim(params)
        zero_grads(params)
        return float(weighted[-2])

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on some rank (a stop signal stops them all)."""
        value = torch.tensor([float(flag)], device=self.device)
        torch_distributed.all_reduce(value, op=torch_distributed.ReduceOp.MAX)
        return bool(value.item())


def run_svi(model, guide, *, n_units: int, batch: int | None, steps: int, lr: float, seed: int = 0,
            loss_scale: float = 1.0, step_args: Callable[[int], tuple] = lambda step: (), desc: str = "SVI",
            progress: bool = True, checkpoint: str | Path | None = None, resume: bool = False,
            checkpoint_every: int = 100, device: str | torch.device = "cpu", sharded: bool = False) -> SVIRun:
    """``steps`` steps of SVI (mean-field ELBO, analytic KLs where they exist) on ``model`` / ``guide``.

    The model is called as ``model(units, *step_args(step))``: ``units`` the
    indices of this step's minibatch of ``n_units`` (None when ``batch`` is None
    or covers them all); ``step_args`` lets a model change with the step (the
    CEN's noise warm-up). The guide's parameters must exist already (call it
    once), so a resumed run can fill them in place.

    ``checkpoint``: a file that gets the whole state every ``checkpoint_every``
    steps, at the end and when SIGINT / SIGTERM stops the fit (``interrupted``
    is then set); ``resume=True`` continues from it. Without a checkpoint,
    Ctrl-C raises KeyboardInterrupt as usual. A non-finite ELBO or parameter
    raises ``FitDiverged`` naming the step, without overwriting the last
    checkpoint. Runs under ``deterministic()``: same seed, same result.

    ``sharded`` (data-parallel only): each process's model holds its own shard of
    the units (``n_units`` and ``batch`` are this process's), with plates sized
    to the whole data; each process draws its own minibatches from its shard, and
    a process's gradient weighs by its share of all the units scored in the step.
    Every process saves its own minibatch order beside the checkpoint
    (``<checkpoint>.rank<r>``), so a resumed fit continues each shard where it was.
    """
    batch = n_units if batch is None else min(batch, n_units)
    generator = torch.Generator().manual_seed(seed)
    optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1.0 / max(steps, 1)), "clip_norm": 10.0})
    rank, world = process_group()
    if world > 1:
        parallel = DataParallelStep(model, guide, optim, TraceMeanField_ELBO(), n_units, batch, device, sharded)
        svi_step = parallel.step
    else:
        svi_step = SVI(model, guide, optim, loss=TraceMeanField_ELBO()).step
    run, step = SVIRun(steps=steps, lr=lr), 0
    order, cursor = None, n_units  # the epoch's permutation and how far into it the fit is
    checkpoint = Path(checkpoint) if checkpoint else None
    if resume and checkpoint and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state["steps"] != steps:
            raise ValueError(f"{checkpoint} belongs to a fit of {state['steps']} steps, not {steps}")
        load_params(state["params"], checkpoint)
        optim.set_state(state["optim"])
        run.losses, step, order, cursor = state["losses"], state["step"], state["order"], state["cursor"]
        generator.set_state(state["generator"])
        pyro.util.set_rng_state(state["rng"])
        if sharded and rank > 0:  # this shard's own minibatch order
            own = torch.load(_rank_file(checkpoint, rank), map_location=device, weights_only=False)
            order, cursor = own["order"], own["cursor"]
            generator.set_state(own["generator"])
    if world > 1:
        parallel.broadcast()  # identical parameters on every rank, whatever each one started from

    def save(at_step):
        if not finite_params():  # never replace a good checkpoint with a diverged one
            raise FitDiverged(diverged_message(f"a parameter became NaN or infinite by step {at_step}",
                                               lr, checkpoint))
        if rank != 0:  # the ranks hold the same parameters; one writes them, a shard's rank its own order
            if sharded:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(_rank_file(checkpoint, rank)) as partial:
                    torch.save({"order": order, "cursor": cursor, "generator": generator.get_state()}, partial)
            return
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(checkpoint) as partial:
            params = {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}
            torch.save({"params": params, "optim": optim.get_state(), "losses": run.losses, "step": at_step,
                        "steps": steps, "order": order, "cursor": cursor, "generator": generator.get_state(),
                        "rng": pyro.util.get_rng_state()}, partial)

    started = time.perf_counter()
    bar = tqdm(total=steps, initial=step, desc=desc, disable=not progress or rank != 0, dynamic_ncols=True)
    with bar, deterministic(), StopSignal() if checkpoint else nullcontext() as stop:
        while step < steps:
            units = None
            if batch < n_units:
                if cursor + batch > n_units:
                    order, cursor = torch.randperm(n_units, generator=generator).to(device), 0
                units, cursor = order[cursor: cursor + batch], cursor + batch
            loss = svi_step(units, *step_args(step))
            if not math.isfinite(loss):
                raise FitDiverged(diverged_message(f"the ELBO became {loss} at step {step + 1}", lr, checkpoint))
            run.losses.append(loss / loss_scale)
            step += 1
            bar.update()
            if step % 25 == 1:
                bar.set_postfix(loss=f"{run.losses[-1]:.4f}")
            if checkpoint and (step % checkpoint_every == 0 or step == steps):
                save(step)
            stopping = stop is not None and stop.received is not None
            if world > 1 and checkpoint:
                stopping = parallel.any_rank(stopping)
            if stopping and step < steps:
                run.interrupted = True
                save(step)
                how = signal.Signals(stop.received).name if stop.received is not None else "a signal to another rank"
                bar.write(f"stopped by {how} at step {step} of {steps}; the checkpoint {checkpoint} resumes it")
                break
    run.seconds = time.perf_counter() - started
    return run


def _rank_file(checkpoint: Path, rank: int) -> Path:
    return checkpoint.with_name(f"{checkpoint.name}.rank{rank}")


def diverged_message(what: str, lr: float, checkpoint: Path | None) -> str:
    kept = (f"the last good checkpoint is kept in {checkpoint}" if checkpoint and checkpoint.exists()
            else "no checkpoint was saved before it")
    return (f"the fit diverged: {what}; try a smaller learning rate (--lr, this fit used {lr:g}); {kept}")
