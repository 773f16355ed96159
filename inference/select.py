"""Choose the Bayesian CEN's variant and K for a crowd by held-out predictive log-likelihood.

Crowds differ in how people sort: the simulated ones by one attribute at a
time (the ``choice`` variant fits them best), real people mostly by overall
kind (``kind``). Which one a user's crowd is, and how many dims its
embedding needs, is read off the data: a share of the training grids is
held out whole as a validation set, each candidate is fitted on the rest
with a shortened schedule, and the candidate whose posterior predictive
gives the validation pairs the highest log-likelihood wins. The caller then
refits the winner on all training grids. Grids are held out whole, as in
the final test, so the score measures prediction for new grids, which is
what a user asks of the fit. PSIS-LOO would avoid the extra fits, but its
k-hat is far above 0.7 on every HIT of these fits, so it cannot be trusted.

The search is greedy, to keep its cost down: first the variants at the
largest K, then the other K's for the winning variant. A validation set of
a few dozen grids is a noisy judge, so each step keeps the simpler
candidate (``choice`` before ``kind``, which adds the overall sort to it;
the smaller K) unless the other one's validation NLL is lower by more than
one standard error of the paired difference, taken over validation HITs
(the "one-standard-error rule"): picking the lowest NLL outright chose
K = 10 where the paper's K = 4 predicted the test grids better. Each candidate gets
half the final fit's steps: shorter fits favour the smaller K, which
converges sooner (benchmarks/README.md, "Sorting by kind").

On a large crowd the candidates see a seeded sample of grids: at most about
``SELECTION_PAIRS`` training pairs and a quarter of that for validation, so
choosing costs a bounded time however large the crowd (on a campaign of 10 M
pairs, fitting every candidate on all of it would take several times the
final fit). The sample is still thousands of HITs, enough to tell the
variants apart; with less data the one-standard-error rule leans to the
smaller K, which the final fit on all the data then keeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cen_bayes.api import AUTO, CEN
from cen_bayes.crowd import CrowdData
from cen_bayes.metrics import pair_nll, pair_scores
from cen_bayes.splits import Split
from models.svi_trainer import process_group, shared

VARIANT_CANDIDATES = ("kind", "choice")
K_CANDIDATES = (10, 4)
VALIDATION_FRAC = 0.2  # of the training grids
STEPS_SHARE = 0.5  # of the final fit's steps, per candidate (see the module docstring)
SELECTION_PAIRS = 1_000_000  # training pairs the candidates fit at most (a sample of grids above it)


@dataclass
class Selection:
    variant: str
    K: int
    scores: pd.DataFrame  # one row per candidate: variant, K, validation NLL and accuracy, seconds

    def records(self) -> list[dict]:
        return self.scores.to_dict("records")


def validation_split(data: CrowdData, split: Split, frac: float = VALIDATION_FRAC, seed: int = 0) -> Split | None:
    """Hold out a seeded ``frac`` of the training grids whole (at least one, leaving at least one);
    None when there are fewer than two training grids."""
    grid = data.hits["grid"].to_numpy()
    train_grids = np.unique(grid[split.train_hits])
    if len(train_grids) < 2:
        return None
    n_valid = min(max(int(round(frac * len(train_grids))), 1), len(train_grids) - 1)
    valid = np.random.default_rng(seed + 1).permutation(train_grids)[:n_valid]
    held = split.train_hits & np.isin(grid, valid)
    return Split(train_hits=grid_sample(data, split.train_hits & ~held, SELECTION_PAIRS, seed + 2),
                 test_hits=grid_sample(data, held, SELECTION_PAIRS // 4, seed + 3))


def grid_sample(data: CrowdData, hits: np.ndarray, max_pairs: int, seed: int) -> np.ndarray:
    """``hits`` (a bool per HIT), or, when they hold more than ``max_pairs`` pairs, those of a seeded
    random sample of their grids holding about ``max_pairs``."""
    n_pairs = np.bincount(data.pairs.hit.numpy(), minlength=data.n_hits)
    if n_pairs[hits].sum() <= max_pairs:
        return hits
    grid = data.hits["grid"].to_numpy()
    grids = np.random.default_rng(seed).permutation(np.unique(grid[hits]))
    per_grid = np.bincount(grid[hits], weights=n_pairs[hits], minlength=data.n_grids)[grids]
    keep = grids[: np.searchsorted(np.cumsum(per_grid), max_pairs) + 1]
    return hits & np.isin(grid, keep)


def candidate_p_same(data: CrowdData, inner: Split, pairs, variant: str, K: int, **options) -> np.ndarray:
    """P(same) of the validation ``pairs`` under a candidate fitted on ``inner.train_hits``. Under torchrun
    every rank fits its shard and rank 0, which holds the fitted model, predicts for all of them."""
    cen = CEN(K, variant, **options).fit(data, inner)
    return shared(cen.predict_proba(data, pairs) if process_group()[0] == 0 else None)


def select(data: CrowdData, split: Split, variant: str = AUTO, K: int | str = AUTO, *, steps: int | None = None,
           seed: int = 0, device: str = "cpu", progress: bool = True, **fit_options) -> Selection:
    """Fit each candidate on the training grids less a validation share; choose by validation NLL
    with the one-standard-error rule (module docstring).

    ``variant`` / ``K``: ``"auto"`` to search, or a value to hold fixed. ``steps``: the final fit's
    steps (None: its default); each candidate gets ``STEPS_SHARE`` of them.
    """
    from inference.fit import default_steps

    variants = VARIANT_CANDIDATES if variant == AUTO else (variant,)
    Ks = K_CANDIDATES if K == AUTO else (int(K),)
    inner = validation_split(data, split, seed=seed)
    if inner is None:  # nothing to validate on: the simplest candidate, and say so
        fallback = Selection(variants[-1], Ks[-1], pd.DataFrame(columns=["variant", "K", "validation_nll", "seconds"]))
        if progress:
            print(f"one training grid leaves none to validate on: {fallback.variant}, K = {fallback.K} "
                  "(give --variant and --K to choose)", flush=True)
        return fallback
    candidate_steps = max(1, round(STEPS_SHARE * (steps or default_steps(False))))
    validation_pairs = data.pairs.subset(inner.pair_masks(data)[1])
    labels, n_pairs = validation_pairs.label.numpy(), len(validation_pairs)
    _, validation_hit = np.unique(validation_pairs.hit.numpy(), return_inverse=True)
    rows: list[dict] = []
    hit_nll: dict[tuple[str, int], np.ndarray] = {}  # per validation HIT: the sum of its pairs' NLL

    def score(v: str, k: int) -> tuple[str, int]:
        started = time.perf_counter()
        p_same = candidate_p_same(data, inner, validation_pairs, v, k, steps=candidate_steps, draws=20, seed=seed,
                                  device=device, progress=False, **fit_options)
        held = pair_scores(labels, p_same)
        hit_nll[v, k] = np.bincount(validation_hit, weights=pair_nll(labels, p_same))
        rows.append({"variant": v, "K": k, "validation_nll": held["nll"], "validation_accuracy": held["accuracy"],
                     "steps": candidate_steps, "seconds": time.perf_counter() - started})
        if progress:
            print(f"  candidate {v:7s} K {k:3d}: validation NLL {held['nll']:.4f}, accuracy {held['accuracy']:.3f}",
                  flush=True)
        return v, k

    def simpler_unless_beaten(simple: tuple[str, int], rich: tuple[str, int]) -> tuple[str, int]:
        """``rich`` if its validation NLL per pair is lower than ``simple``'s by more than one standard
        error of the paired difference (per-HIT sums are the independent units), else ``simple``."""
        gain = hit_nll[simple] - hit_nll[rich]
        standard_error = np.sqrt(len(gain)) * gain.std(ddof=1) / n_pairs if len(gain) > 1 else 0.0
        return rich if gain.sum() / n_pairs > standard_error else simple

    if progress:
        sampled = " (a sample of the grids)" if inner.train_hits.sum() + inner.test_hits.sum() < split.train_hits.sum() \
            else ""
        print(f"choosing {'the variant' if variant == AUTO else ''}{' and ' if variant == K == AUTO else ''}"
              f"{'K' if K == AUTO else ''} on {int(inner.test_hits.sum())} validation HITs "
              f"({VALIDATION_FRAC:.0%} of the training grids), {candidate_steps} steps per candidate on "
              f"{int(inner.train_hits.sum())} training HITs{sampled}", flush=True)
    best = score(variants[-1], Ks[0])  # the simplest variant first: choice, then kind, which adds to it
    for v in reversed(variants[:-1]):
        best = simpler_unless_beaten(best, score(v, Ks[0]))
    for k in Ks[1:]:  # smaller K's: simpler
        best = simpler_unless_beaten(score(best[0], k), best)
    return Selection(variant=best[0], K=best[1], scores=pd.DataFrame(rows))
