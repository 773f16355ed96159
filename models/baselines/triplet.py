"""The standard triplet-network baseline (paper §4.2, e.g. Schroff et al. 2015): one similarity for everyone.

Triplets (a, p, n) are formed inside each training HIT (``models.baselines.triplet_sampling``)
and the image encoder f_ψ is trained on
L = [‖x_a − x_p‖₂ − ‖x_a − x_n‖₂ + margin]₊ + λ·mean(‖x_a‖₂, ‖x_p‖₂, ‖x_n‖₂).
Margin and λ are CSN's (0.2, 5e-3), so this is exactly ``CSNOracle`` with one
condition and its mask fixed to 1: the pair of baselines isolates what knowing
the attribute buys.
"""

from __future__ import annotations

import torch

from cen_bayes.crowd import CrowdData, Pairs
from models.baselines.distance import DistanceBaseline
from models.baselines.triplet_sampling import Triplets, sample_triplets, triplet_loss


class Triplet(DistanceBaseline):
    """Triplet network on within-HIT triplets; P(same) = σ(α − β·d) fitted on training pairs.

    ``n_negatives`` negatives are drawn per ordered positive pair, once per fit
    (see ``sample_triplets``); the triplets are fitted in batches of
    ``batch_size`` with supplement A's Adam recipe.
    """

    name = "triplet"

    def __init__(self, K: int = 10, *, margin: float = 0.2, lambda_embed: float = 5e-3, n_negatives: int = 1,
                 **kwargs):
        super().__init__(K, **kwargs)
        self.margin, self.lambda_embed, self.n_negatives = margin, lambda_embed, n_negatives

    def _training_set(self, data: CrowdData, train: Pairs) -> Triplets:
        return sample_triplets(train, self.n_negatives, seed=self.seed)

    def _batch_loss(self, batch: Triplets) -> torch.Tensor:
        x_a, x_p, x_n = self._embed(batch.anchor, batch.positive, batch.negative)
        return triplet_loss(x_a, x_p, x_n, self.margin, self.lambda_embed).mean()
