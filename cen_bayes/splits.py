"""Train/test splits by whole grids, and nested training fractions.

The paper (§4.5) holds out 15 % of the data as *entire grids*: the test asks
how a known worker sorts an unseen set of images, so no pair of a held-out
grid may leak into training. Learning curves (Fig. 9) subsample the training
grids; fractions are nested (a larger fraction contains every smaller one) so
curves move only because data was added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cen_bayes.crowd import CrowdData


@dataclass
class Split:
    """Which HITs train and which test; HITs in neither are unused (learning curves)."""

    train_hits: np.ndarray  # bool, one per HIT
    test_hits: np.ndarray  # bool, one per HIT

    def pair_masks(self, data: CrowdData) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean masks over ``data.pairs`` for the training and test pairs."""
        hit = data.pairs.hit.cpu().numpy()
        return torch.from_numpy(self.train_hits[hit]), torch.from_numpy(self.test_hits[hit])

    def labels(self) -> np.ndarray:
        """'train', 'test' or 'unused' per HIT, for output tables."""
        return np.where(self.train_hits, "train", np.where(self.test_hits, "test", "unused"))


def split_by_grid(data: CrowdData, holdout_frac: float = 0.15, seed: int = 0) -> Split:
    """Hold out a seeded random ``holdout_frac`` of grids with all their HITs."""
    if not 0.0 <= holdout_frac < 1.0:
        raise ValueError(f"holdout_frac must be in [0, 1), got {holdout_frac}")
    n_test = int(round(holdout_frac * data.n_grids))
    if holdout_frac > 0:
        n_test = min(max(n_test, 1), data.n_grids - 1)
    test_grids = np.random.default_rng(seed).permutation(data.n_grids)[:n_test]
    test = np.isin(data.hits["grid"].to_numpy(), test_grids)
    return Split(train_hits=~test, test_hits=test)


def seen_images(data: CrowdData, train_hits: np.ndarray) -> np.ndarray:
    """Bool per image: it appears in a training HIT (its embedding is learned, not drawn).

    Grids are held out whole, so a held-out grid may show images no training
    grid showed: nothing is known of them but the collection they come from.
    """
    seen = np.zeros(data.n_images, dtype=bool)
    seen[data.table.loc[train_hits[data.table["hit"].to_numpy()], "image"].to_numpy()] = True
    return seen


def unseen_worker_hits(data: CrowdData, split: Split) -> np.ndarray:
    """Bool per HIT: a test HIT whose worker has no training HIT.

    Grids are held out whole, so a worker who sorted only held-out grids is
    new at prediction time; the Bayesian CEN then draws that worker's
    activation from the population prior (``inference.predict``).
    """
    worker = data.hits["worker"].to_numpy()
    return split.test_hits & ~np.isin(worker, worker[split.train_hits])


def training_fraction(data: CrowdData, split: Split, fraction: float, seed: int = 0) -> Split:
    """Keep a nested, seeded ``fraction`` of the training grids; the test side is unchanged."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    grid = data.hits["grid"].to_numpy()
    train_grids = np.unique(grid[split.train_hits])
    order = np.random.default_rng(seed).permutation(len(train_grids))
    keep = train_grids[order[: max(1, int(round(fraction * len(train_grids))))]]
    return Split(train_hits=split.train_hits & np.isin(grid, keep), test_hits=split.test_hits.copy())
