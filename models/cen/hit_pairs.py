"""Pairs grouped by HIT, with each distinct image pair's likelihood computed once.

The choice variant needs, for every HIT h and dimension k, the sum over h's
pairs of log P(l_ij | |x_ik − x_jk|). That term depends only on the image pair
and its label, and a pair of images is labelled in several HITs (on simulated
retina the training pairs are several times the distinct image pairs:
benchmarks/README.md, "Measurements behind the defaults"), so:

1. take the differences x_i − x_j of the distinct image pairs u (a fixed ±1
   sparse matrix times x) and their logits z_uk = logit P(l = 1 | dim k);
2. with log σ(z) = z − softplus(z) and log σ(−z) = −softplus(z), a HIT's sum
   is  Σ_{u labelled same} z_u − Σ_{all u} softplus(z_u):  two sparse
   (HITs × U) count matrices times dense (U, K) tables.

Fixed sparse products with a kept transpose (``models.cen.sparse``) replace
gathers, ``index_add`` and a per-label table: the same code runs on CUDA.

The overall (category) sort weighs every dim by its HIT's own weights, so its
distance is not a property of the image pair alone; ``weighted_log_lik_per_hit``
scores it pair by pair (``overall=True``), from one cdist per HIT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.cen.hit_images import HitImages
from models.cen.sparse import SparseMatrix, csr_rows


def _rows(matrix: SparseMatrix, rows: torch.Tensor) -> torch.Tensor:
    """The selected rows of a ``SparseMatrix`` as a plain CSR tensor (a minibatch of HITs)."""
    entries, ptr = csr_rows(matrix.ptr, rows)
    return torch.sparse_csr_tensor(ptr, matrix.col[entries], matrix.val[entries], size=(len(rows), matrix.n_cols),
                                   check_invariants=False)


class HitPairs(nn.Module):
    """The pairs (i, j, label) of HITs 0..n_hits-1 (``hit`` per pair), indexed by distinct image pair."""

    def __init__(self, i, j, label, hit, n_hits: int, n_images: int, overall: bool = False):
        super().__init__()
        lo, hi = torch.minimum(i, j), torch.maximum(i, j)
        key, uniq = torch.unique(lo * n_images + hi, return_inverse=True)
        n_uniq, rows = len(key), torch.arange(len(key), device=i.device)
        ones = torch.ones(n_uniq, device=i.device)
        self.diff = SparseMatrix(torch.cat([rows, rows]), torch.cat([key // n_images, key % n_images]),
                                 torch.cat([ones, -ones]), n_uniq, n_images)  # x -> x_i − x_j per distinct pair
        ones = torch.ones(len(uniq), device=i.device)
        self.all = SparseMatrix(hit, uniq, ones, n_hits, n_uniq)  # pairs of h per distinct pair
        same = label > 0
        self.same = SparseMatrix(hit[same], uniq[same], ones[same], n_hits, n_uniq)  # the "same" ones
        n_pairs = torch.bincount(hit, minlength=n_hits)
        self.register_buffer("n_pairs", n_pairs.float())
        if overall:  # per-HIT weighted distances (the overall sort)
            self.hit_images = HitImages(i, j, hit, n_hits, n_images)
            self.register_buffer("pair_hit", hit)
            self.register_buffer("pair_label", label.float())
        self.register_buffer("n_same", torch.zeros(n_hits, device=i.device).index_add_(0, hit, label.float()))

    def log_lik_per_hit(self, logits: torch.Tensor, hits: torch.Tensor | None = None) -> torch.Tensor:
        """(len(hits), K): Σ over each HIT's pairs of log P(l | logit), from (U, K) logits."""
        if hits is None:
            return self.same @ logits - self.all @ F.softplus(logits)
        return _rows(self.same, hits) @ logits - _rows(self.all, hits) @ F.softplus(logits)

    def weighted_log_lik_per_hit(self, x: torch.Tensor, weight: torch.Tensor, logit_of_distance,
                                 hits: torch.Tensor | None = None) -> torch.Tensor:
        """(len(hits),): Σ over each HIT's pairs of log P(l | d), d = ||√w_h ⊙ (x_i − x_j)||₂.

        ``weight``: (len(hits), K) non-negative weights of the picked HITs; ``logit_of_distance``
        maps d to the logit of "same". The distances come from one cdist per HIT (``HitImages``).
        """
        if hits is None:
            d = self.hit_images.distances(x, weight.sqrt())
            local, label, n = self.pair_hit, self.pair_label, len(self.n_pairs)
        else:
            entries, local = pairs = self.hit_images.pairs_of(hits)
            d = self.hit_images.distances(x, weight.sqrt(), hits, pairs)
            label, n = self.pair_label[entries], len(hits)
        signed = (2.0 * label - 1.0).to(d.dtype) * logit_of_distance(d)
        return d.new_zeros(n).index_add_(0, local, F.logsigmoid(signed))

    def counts(self, hits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pairs labelled same, all pairs) per HIT."""
        if hits is None:
            return self.n_same, self.n_pairs
        return self.n_same[hits], self.n_pairs[hits]
