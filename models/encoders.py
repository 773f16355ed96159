"""The paper's encoders (Fig. 2, supplement A), shared by every network in the project.

The point-estimate CEN (``models.baselines.paper_cen``) uses all three; the
attribute-blind baselines (Siamese, triplet, CSN) use the image encoder, so
they differ from the CEN only in their loss; the Bayesian CEN's MAP mode on
the paper's loss uses the context encoder. Inputs are one-hot (an image, a
worker) or S-hot (a grid's image set), so the first layer is a row lookup
(``OneHotLinear``) or a sum of rows (``SetHotLinear``), identical to the
paper's dense layer on those encodings at a fraction of the cost. The final
ReLU of the attribute encoders makes activations ≥ 0 and, with an L1
penalty, sparse; the image encoder ends linearly so coordinates take either
sign.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cen_bayes.crowd import CrowdData


class OneHotLinear(nn.Module):
    """``nn.Linear(n_in, n_out)`` applied to one-hot vectors, as a row lookup.

    W·o(i) + b is row i of Wᵀ plus b, so an ``nn.Embedding`` holding Wᵀ gives the
    paper's dense first layer exactly, at O(n_out) instead of O(n_in·n_out)
    per input. Initialised like ``nn.Linear`` (U(±1/√n_in) for weight and bias).
    """

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Embedding(n_in, n_out)
        self.bias = nn.Parameter(torch.empty(n_out))
        bound = 1.0 / math.sqrt(n_in)
        nn.init.uniform_(self.weight.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.weight(index) + self.bias


class SetHotLinear(nn.Module):
    """``nn.Linear(n_in, n_out)`` applied to S-hot vectors, as a sum of rows.

    W·s(g) + b is the sum of the rows of Wᵀ for the images in grid g, plus b:
    an ``nn.EmbeddingBag(mode='sum')``, identical to the paper's dense layer on
    the S-hot grid encoding. Sets come as a (B, S_max) index matrix padded with
    ``n_in``, the bag's ``padding_idx``, which is left out of the sum, so grids
    of different sizes batch together. Initialised like ``nn.Linear``.
    """

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.EmbeddingBag(n_in + 1, n_out, mode="sum", padding_idx=n_in)
        self.bias = nn.Parameter(torch.empty(n_out))
        bound = 1.0 / math.sqrt(n_in)
        with torch.no_grad():
            nn.init.uniform_(self.weight.weight, -bound, bound)
            self.weight.weight[n_in].zero_()
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, sets: torch.Tensor) -> torch.Tensor:
        return self.weight(sets) + self.bias


def context_encoder(n_images: int, K: int, hidden: int = 200) -> nn.Sequential:
    """p_θ: S-hot(grid image set) -> hidden ReLU -> hidden ReLU -> K ReLU (supplement A).

    Takes padded grid sets (``padded_grid_sets``); also the MAP mode's context network.
    """
    return nn.Sequential(
        SetHotLinear(n_images, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, K), nn.ReLU(),
    )


def worker_encoder(n_workers: int, K: int, hidden: int = 200) -> nn.Sequential:
    """q_φ: one-hot(worker) -> hidden ReLU -> hidden ReLU -> K ReLU (supplement A)."""
    return nn.Sequential(
        OneHotLinear(n_workers, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, K), nn.ReLU(),
    )


def image_encoder(n_images: int, K: int, hidden: int = 200) -> nn.Sequential:
    """f_ψ: one-hot(image) -> hidden ReLU -> K, linear so coordinates take either sign (supplement A).

    Shared by the CEN and the attribute-blind baselines (Siamese, triplet, CSN),
    so they differ only in their loss.
    """
    return nn.Sequential(OneHotLinear(n_images, hidden), nn.ReLU(), nn.Linear(hidden, K))


def padded_grid_sets(data: CrowdData) -> torch.Tensor:
    """(n_grids, S_max) image codes of each grid's image set, padded with ``n_images``."""
    counts = data.grid_ptr.diff()
    rows = torch.repeat_interleave(torch.arange(data.n_grids), counts)
    cols = torch.arange(len(data.grid_image)) - data.grid_ptr[rows]
    sets = torch.full((data.n_grids, int(counts.max())), data.n_images, dtype=torch.int64)
    sets[rows, cols] = data.grid_image
    return sets
