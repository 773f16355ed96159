"""Attribute-weighted distances of all pairs of every HIT, from one batched cdist.

In the continuous variants a pair's distance is d = ||a_h ⊙ (x_i − x_j)|| with
a_h the activation of its HIT h. Computed pair by pair that is a (pairs × K)
tensor per operation (146k × 10 at retina scale), forward and backward. But
a_h is shared by all S(S−1)/2 pairs of h, so scaling h's S images once,
y_hs = a_h ⊙ x_s, and taking ``torch.cdist`` of each HIT's (S, K) block gives
every distance of h; the pairs are then read out of the (H, S, S) array. The
tensors that scale with K hold H·S rows instead of H·S(S−1)/2.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cen.sparse import csr_row_entries


class HitImages(nn.Module):
    """HITs' images as a padded (H, S) matrix, and each pair's place in the (H, S, S) distances.

    Pairs must come sorted by HIT (``CrowdData`` and the model keep them so), which lets
    ``distances`` take a minibatch of HITs as the rows of a CSR index.
    """

    def __init__(self, i, j, hit, n_hits: int, n_images: int):
        super().__init__()
        if len(hit) > 1 and not bool((hit.diff() >= 0).all()):
            raise ValueError("HitImages needs pairs sorted by HIT")
        keys = torch.cat([hit * n_images + i, hit * n_images + j])
        members, where = torch.unique(keys, return_inverse=True)  # (HIT, image), sorted by HIT
        member_hit, member_image = members // n_images, members % n_images
        counts = torch.bincount(member_hit, minlength=n_hits)
        position = torch.arange(len(members)) - (counts.cumsum(0) - counts)[member_hit]
        S = int(counts.max())
        images = torch.full((n_hits, S), n_images, dtype=torch.long)  # padding points at a zero row
        images[member_hit, position] = member_image
        pos_i, pos_j = position[where[: len(i)]], position[where[len(i):]]
        n_pairs = torch.bincount(hit, minlength=n_hits)
        self.register_buffer("images", images)
        self.register_buffer("pair_place", hit * S * S + pos_i * S + pos_j)
        self.register_buffer("pair_in_hit", pos_i * S + pos_j)  # place within its HIT's S × S block
        self.register_buffer("hit_ptr", torch.cat([n_pairs.new_zeros(1), n_pairs.cumsum(0)]))

    def distances(self, x: torch.Tensor, a_hit: torch.Tensor, hits: torch.Tensor | None = None,
                  pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """d = ||a_h ⊙ (x_i − x_j)|| for every pair, given (n_images, K) x and (n_hits, K) a_hit;
        with ``hits``, for the pairs of those HITs only (in order), ``a_hit`` then (len(hits), K);
        ``pairs``: ``pairs_of(hits)`` when the caller already has it."""
        padded = torch.cat([x, x.new_zeros(1, x.shape[-1])])
        images = self.images if hits is None else self.images[hits]
        scaled = a_hit.unsqueeze(-2) * padded[images]  # (H, S, K)
        flat = torch.cdist(scaled, scaled).flatten()
        if hits is None:
            return flat[self.pair_place]
        entries, local = pairs if pairs is not None else self.pairs_of(hits)
        return flat[local * self.images.shape[1] ** 2 + self.pair_in_hit[entries]]

    def pairs_of(self, hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the pairs of ``hits``, in order; each one's HIT as a position in ``hits``)."""
        return csr_row_entries(self.hit_ptr, hits)
