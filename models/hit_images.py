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


class HitImages(nn.Module):
    """HITs' images as a padded (H, S) matrix, and each pair's place in the (H, S, S) distances."""

    def __init__(self, i, j, hit, n_hits: int, n_images: int):
        super().__init__()
        keys = torch.cat([hit * n_images + i, hit * n_images + j])
        members, where = torch.unique(keys, return_inverse=True)  # (HIT, image), sorted by HIT
        member_hit, member_image = members // n_images, members % n_images
        counts = torch.bincount(member_hit, minlength=n_hits)
        position = torch.arange(len(members)) - (counts.cumsum(0) - counts)[member_hit]
        S = int(counts.max())
        images = torch.full((n_hits, S), n_images, dtype=torch.long)  # padding points at a zero row
        images[member_hit, position] = member_image
        pos_i, pos_j = position[where[: len(i)]], position[where[len(i):]]
        self.register_buffer("images", images)
        self.register_buffer("pair_place", hit * S * S + pos_i * S + pos_j)

    def distances(self, x: torch.Tensor, a_hit: torch.Tensor) -> torch.Tensor:
        """d = ||a_h ⊙ (x_i − x_j)|| for every pair, given (n_images, K) x and (n_hits, K) a_hit."""
        padded = torch.cat([x, x.new_zeros(1, x.shape[-1])])
        scaled = a_hit.unsqueeze(-2) * padded[self.images]  # (H, S, K)
        return torch.cdist(scaled, scaled).flatten()[self.pair_place]
