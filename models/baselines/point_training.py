"""One minibatch training loop for every point-estimate pair model.

The paper's CEN (supplement A) and the baselines it is compared with
(Siamese, triplet, CSN) are all trained the same way: shuffle the labelled
pairs each epoch, walk through them in minibatches, take an Adam step on the
model's loss per batch. Writing that loop once keeps the baselines honest with
each other — they differ only in their ``loss_fn`` — and gives the speed
comparisons one shared, well-tuned inner loop.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from cen_bayes.crowd import Pairs

# How often (in steps) the progress bar's running loss is refreshed. Reading a
# loss back to the host synchronises a GPU, so it is not done on every step.
_POSTFIX_EVERY = 200


def _adam(module: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam(lr, betas=(0.9, 0.999)); the fused kernel where this torch has one for the device.

    Fused Adam is the same update rule in one kernel per step instead of a
    Python loop over parameter tensors: for the CEN's small MLPs the optimiser
    step is a sizeable part of a training step, and the fused one is several
    times faster on CPU (measured: benchmarks/README.md, "Measurements behind
    the defaults"). Builds without a fused kernel for the device fall
    back to the standard implementation.
    """
    params = list(module.parameters())
    try:
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))


def train_minibatch(
    module: nn.Module,
    loss_fn: Callable[[Pairs], torch.Tensor],
    pairs: Pairs,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "",
) -> list[float]:
    """Train ``module`` with Adam on minibatches of ``pairs``; return the mean loss of each epoch.

    Each epoch draws a fresh permutation of the pairs from a ``torch.Generator``
    seeded with ``seed`` (so the batch order does not depend on, or disturb,
    the global RNG), applies it to every Pairs tensor once, and then cuts the
    shuffled tensors into contiguous slices of ``batch_size`` (the last batch
    may be smaller). ``loss_fn(batch)`` must return the scalar loss of one
    batch, averaged over its pairs; the optimiser is
    ``Adam(lr, betas=(0.9, 0.999))`` over ``module.parameters()``.

    The value recorded for an epoch is the pair-weighted mean of its batch
    losses, i.e. the average per-pair loss seen during that epoch (parameters
    change along the way, as in any training log).

    Reproducibility: this function seeds only the batch order. Parameter
    initialisation is the caller's job — call ``torch.manual_seed(seed)`` (or
    build inside ``torch.random.fork_rng``) *before* constructing ``module``.

    ``module`` and ``pairs`` are moved to ``device``; any other tensor
    ``loss_fn`` closes over must already live there.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    n = len(pairs)
    if n == 0:
        raise ValueError("no training pairs")
    device = torch.device(device)
    module.to(device)
    pairs = pairs.to(device)
    optimizer = _adam(module, lr)
    generator = torch.Generator().manual_seed(int(seed))
    n_batches = (n + batch_size - 1) // batch_size
    history: list[float] = []
    module.train()
    with tqdm(total=epochs * n_batches, disable=not progress, desc=desc or None, unit="batch",
              leave=False, dynamic_ncols=True) as bar:
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            shuffled = pairs.subset(order)  # one gather per epoch; batches below are views
            total = torch.zeros((), device=device)
            for b, start in enumerate(range(0, n, batch_size)):
                batch = shuffled.subset(slice(start, start + batch_size))  # views, no copy
                loss = loss_fn(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(batch)
                if progress and b % _POSTFIX_EVERY == _POSTFIX_EVERY - 1:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{total.item() / min(n, start + batch_size):.4f}",
                                    refresh=False)
                bar.update()
            history.append(total.item() / n)
            bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.4f}")
    module.eval()
    return history
