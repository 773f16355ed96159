"""Conditional Similarity Networks as an oracle baseline (Veit, Belongie & Karaletsos, CVPR 2017; paper §4.2).

CSN learns one entangled embedding f_ψ and, per known condition c, a
non-negative mask m_c ∈ R^K; similarity under c is d_c = ‖m_c ⊙ (x_i − x_j)‖₂.
Here the condition of a HIT is the attribute its worker *actually* used —
known only in simulation (or from the workers' text notes) — which no crowd
model gets: the paper quotes CSN as the upper reference (RETINA 75.5 %,
CELEBA 77.3 %). HITs with no attribute (noisy, unknown) share one extra
"other" condition.

Training is CSN's: triplets inside each training HIT (``models.baselines.triplet_sampling``),
L = [d_c(a,p) − d_c(a,n) + margin]₊ + λ_e·mean(‖x_a‖, ‖x_p‖, ‖x_n‖) + λ_m‖m_c‖₁,
margin 0.2, λ_e = 5e-3, λ_m = 5e-4, learned masks initialised N(0.9, 0.7) and
passed through a ReLU (their "learned masks" setting). The batch size, Adam
rate and epochs are supplement A's, as for every baseline here.

``hit_attribute_probabilities`` is not implemented (returns None): the
condition is an input, not an inference, so scoring it as attribute
retrieval would be circular. The learned masks are in ``masks_``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from cen_bayes.crowd import CrowdData, Pairs
from models.energy import weighted_norm
from models.baselines.distance import DistanceBaseline
from models.baselines.triplet_sampling import Triplets, sample_triplets, triplet_loss


class ConditionMasks(nn.Module):
    """m_c = ReLU(w_c) per condition, looked up by HIT through a buffer (so it follows ``.to(device)``)."""

    def __init__(self, hit_condition: np.ndarray, n_conditions: int, K: int):
        super().__init__()
        self.register_buffer("hit_condition", torch.as_tensor(hit_condition, dtype=torch.int64))
        self.weight = nn.Parameter(torch.empty(n_conditions, K).normal_(0.9, 0.7))

    def forward(self, hit: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.weight[self.hit_condition[hit]])


class CSNOracle(DistanceBaseline):
    """CSN told each HIT's true attribute; P(same) = σ(α − β·d_c) fitted on training pairs.

    ``hit_attribute``: one entry per row of ``data.hits`` (str/object; None or
    NaN = "other"), for training and held-out HITs alike.

    Fitted (beside ``DistanceBaseline``'s): ``conditions_`` the condition names
    (sorted attributes, then None for "other"), ``masks_`` (n_conditions, K).
    """

    name = "csn"

    def __init__(self, hit_attribute, K: int = 10, *, margin: float = 0.2, lambda_embed: float = 5e-3,
                 lambda_mask: float = 5e-4, n_negatives: int = 1, **kwargs):
        super().__init__(K, **kwargs)
        self.hit_attribute = pd.Series(np.asarray(hit_attribute, dtype=object), dtype=object)
        self.margin, self.lambda_embed, self.lambda_mask = margin, lambda_embed, lambda_mask
        self.n_negatives = n_negatives

    def _modules(self, data: CrowdData) -> dict[str, nn.Module]:
        if len(self.hit_attribute) != data.n_hits:
            raise ValueError(f"hit_attribute has {len(self.hit_attribute)} entries, data has {data.n_hits} HITs")
        known = self.hit_attribute.notna()
        code, names = pd.factorize(self.hit_attribute[known], sort=True)
        hit_condition = np.full(data.n_hits, len(names), dtype=np.int64)
        hit_condition[known.to_numpy()] = code
        self.conditions_ = [*names, None]
        return {"masks": ConditionMasks(hit_condition, len(self.conditions_), self.K)}

    def _training_set(self, data: CrowdData, train: Pairs) -> Triplets:
        return sample_triplets(train, self.n_negatives, seed=self.seed)

    def _batch_loss(self, batch: Triplets) -> torch.Tensor:
        x_a, x_p, x_n = self._embed(batch.anchor, batch.positive, batch.negative)
        mask = self.network_["masks"](batch.hit)
        return (triplet_loss(x_a, x_p, x_n, self.margin, self.lambda_embed, mask)
                + self.lambda_mask * mask.sum(-1)).mean()

    def distance(self, data: CrowdData, pairs: Pairs) -> np.ndarray:
        if hasattr(self, "network_") and len(self.network_["masks"].hit_condition) != data.n_hits:
            raise ValueError(f"data has {data.n_hits} HITs, the model was fitted on "
                             f"{len(self.network_['masks'].hit_condition)}")
        return super().distance(data, pairs)

    def _pair_distance(self, batch: Pairs) -> torch.Tensor:
        x_i, x_j = self._embed(batch.i, batch.j)
        return weighted_norm(self.network_["masks"](batch.hit), x_i - x_j)

    @property
    def masks_(self) -> np.ndarray:
        """(n_conditions, K) learned non-negative masks, rows in ``conditions_`` order."""
        return torch.relu(self.network_["masks"].weight.detach()).cpu().numpy()
