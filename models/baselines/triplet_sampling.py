"""Triplets drawn inside crowd HITs, and the triplet hinge loss, for the triplet baselines.

The paper compares CEN with a "standard triplet network" and with CSN (Veit,
Belongie & Karaletsos, CVPR 2017), both trained on relative judgements "a is
more like p than n" (§4.2). Crowd HITs give partitions, not triplets; a
partition implies one wherever a and p share a group and n sits in another
group *of the same HIT* — the same worker, the same grid, so the same notion of
similarity. Triplets across HITs would compare two workers' criteria, which is
exactly what these baselines cannot model.

``Triplets`` mirrors ``cen_bayes.crowd.Pairs`` (``len``, ``subset``, ``to``) so
``models.baselines.point_training.train_minibatch`` batches it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cen_bayes.crowd import Pairs, ParallelTensors
from models.energy import weighted_norm


@dataclass
class Triplets(ParallelTensors):
    """(anchor, positive, negative) image codes as parallel int64 tensors, plus the HIT they come from."""

    hit: torch.Tensor  # HIT code (row of CrowdData.hits); CSN reads its condition from it
    anchor: torch.Tensor
    positive: torch.Tensor  # same group as the anchor in that HIT
    negative: torch.Tensor  # another group of the same HIT


def sample_triplets(pairs: Pairs, n_negatives: int = 1, seed: int = 0) -> Triplets:
    """For every positive pair, in both orientations, ``n_negatives`` random negatives of its anchor from its HIT.

    Vectorised: every pair is written in both orientations as (HIT, anchor,
    other image); the negative ones are sorted by the key HIT·N + anchor, so
    the negatives of one (HIT, anchor) form a contiguous run that two
    ``searchsorted`` calls locate for all positives at once; a uniform draw
    from a seeded ``torch.Generator`` then picks inside each run. Anchors
    without a negative (a HIT sorted into one group) give no triplet.

    Drawn once per fit, not per epoch: the shared training loop (and its Adam
    state) runs over one fixed set, as the pair methods do over their pairs;
    every ordered positive pair already brings its own negative, so each
    anchor meets many of its negatives over the set; and the objective is a
    fixed, seed-determined function. ``n_negatives`` > 1 trades time for
    coverage.
    """
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    hit = torch.cat([pairs.hit, pairs.hit])
    anchor, other = torch.cat([pairs.i, pairs.j]), torch.cat([pairs.j, pairs.i])
    same = torch.cat([pairs.label, pairs.label]) > 0.5
    n_images = int(torch.maximum(pairs.i.max(), pairs.j.max())) + 1 if len(pairs) else 1
    key = hit * n_images + anchor
    neg_key, order = key[~same].sort(stable=True)
    neg_image = other[~same][order]
    pos_key = key[same]
    lo = torch.searchsorted(neg_key, pos_key)
    count = torch.searchsorted(neg_key, pos_key, right=True) - lo
    keep = (count > 0).repeat(n_negatives)
    lo, count = lo.repeat(n_negatives)[keep], count.repeat(n_negatives)[keep]
    u = torch.rand(len(lo), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    pick = lo + torch.minimum((u.to(lo.device) * count).long(), count - 1)
    return Triplets(hit=hit[same].repeat(n_negatives)[keep], anchor=anchor[same].repeat(n_negatives)[keep],
                    positive=other[same].repeat(n_negatives)[keep], negative=neg_image[pick])


def triplet_loss(x_a, x_p, x_n, margin: float, lambda_embed: float, mask=None) -> torch.Tensor:
    """Per triplet: [d(a,p) − d(a,n) + margin]₊ + λ·(‖x_a‖₂ + ‖x_p‖₂ + ‖x_n‖₂)/3.

    d = ‖m ⊙ (x − y)‖₂ with CSN's mask m, plain L2 without one. The embedding
    penalty is CSN's (mean over the three images of the L2 norm, Veit et al.
    §4; they take the batch's Frobenius norm / √B, its root-mean-square twin);
    without it the hinge is satisfied by inflating the whole embedding.
    """
    mask = 1.0 if mask is None else mask
    hinge = F.relu(weighted_norm(mask, x_a - x_p) - weighted_norm(mask, x_a - x_n) + margin)
    norms = sum(torch.linalg.vector_norm(x, dim=-1) for x in (x_a, x_p, x_n)) / 3.0
    return hinge + lambda_embed * norms
