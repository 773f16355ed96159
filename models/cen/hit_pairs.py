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

That pays for the whole training set, where every distinct pair is needed
anyway. A minibatch of HITs holds a small share of the pairs, and computing
every distinct pair's logits for it would make a step cost the whole data's
(a campaign of 10 M pairs has millions of distinct pairs): a minibatch is
scored pair by pair instead, gathering only its own pairs' differences, so a
step costs its minibatch.

The overall (category) sort weighs every dim by its HIT's own weights, so its
distance is not a property of the image pair alone; ``weighted_log_lik_per_hit``
scores it pair by pair (``overall=True``), from one cdist per HIT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.cen.hit_images import HitImages
from models.cen.sparse import SparseMatrix, csr_row_entries


class HitPairs(nn.Module):
    """The pairs (i, j, label) of HITs 0..n_hits-1 (``hit`` per pair, sorted by HIT), indexed by distinct
    image pair for the whole set and by HIT for minibatches."""

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
        self.register_buffer("hit_ptr", torch.cat([n_pairs.new_zeros(1), n_pairs.cumsum(0)]))  # pairs of HIT h
        self.register_buffer("pair_i", i)
        self.register_buffer("pair_j", j)
        self.register_buffer("pair_label", label.float())
        if overall:  # per-HIT weighted distances (the overall sort)
            self.hit_images = HitImages(i, j, hit, n_hits, n_images)
            self.register_buffer("pair_hit", hit)
        self.register_buffer("n_same", torch.zeros(n_hits, device=i.device).index_add_(0, hit, label.float()))

    def pairs_of(self, hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the pairs of ``hits``, in order; each one's HIT as a position in ``hits``): what a minibatch scores."""
        return csr_row_entries(self.hit_ptr, hits)

    def log_lik_per_hit(self, x: torch.Tensor, logit_of_distance, hits: torch.Tensor | None = None,
                        pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(len(hits), K): Σ over each HIT's pairs of log P(l | d_k), d_k = |x_ik − x_jk| for each dim k.

        ``logit_of_distance`` maps (pairs, K) distances to the logits of "same". All HITs
        (``hits`` None): each distinct image pair once, summed by the sparse count matrices;
        a minibatch: its own pairs only (module docstring); ``pairs``: ``pairs_of(hits)`` when the
        caller already has it.
        """
        if hits is None:
            logits = logit_of_distance((self.diff @ x).abs())
            return self.same @ logits - self.all @ F.softplus(logits)
        entries, local = pairs if pairs is not None else self.pairs_of(hits)
        logits = logit_of_distance((x[self.pair_i[entries]] - x[self.pair_j[entries]]).abs())
        signed = (2.0 * self.pair_label[entries] - 1.0).to(logits.dtype).unsqueeze(-1) * logits
        return logits.new_zeros(len(hits), logits.shape[-1]).index_add_(0, local, F.logsigmoid(signed))

    def weighted_log_lik_per_hit(self, x: torch.Tensor, weight: torch.Tensor, logit_of_distance,
                                 hits: torch.Tensor | None = None,
                                 pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(len(hits),): Σ over each HIT's pairs of log P(l | d), d = ||√w_h ⊙ (x_i − x_j)||₂.

        ``weight``: (len(hits), K) non-negative weights of the picked HITs; ``logit_of_distance``
        maps d to the logit of "same". The distances come from one cdist per HIT (``HitImages``);
        ``pairs`` as in ``log_lik_per_hit``.
        """
        if hits is None:
            d = self.hit_images.distances(x, weight.sqrt())
            local, label, n = self.pair_hit, self.pair_label, len(self.n_pairs)
        else:
            entries, local = pairs = pairs if pairs is not None else self.pairs_of(hits)
            d = self.hit_images.distances(x, weight.sqrt(), hits, pairs)
            label, n = self.pair_label[entries], len(hits)
        signed = (2.0 * label - 1.0).to(d.dtype) * logit_of_distance(d)
        return d.new_zeros(n).index_add_(0, local, F.logsigmoid(signed))

    def counts(self, hits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pairs labelled same, all pairs) per HIT."""
        if hits is None:
            return self.n_same, self.n_pairs
        return self.n_same[hits], self.n_pairs[hits]
