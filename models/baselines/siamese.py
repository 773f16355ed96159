"""The Siamese baseline (paper §3.2 eq. 2, §4.2): an attribute-blind embedding trained on pairs
with the contrastive loss; the rest (encoder, training loop, calibration) is ``DistanceBaseline``'s.
"""

from __future__ import annotations

import numpy as np
import torch

from cen_bayes.crowd import Pairs
from models.baselines.distance import DistanceBaseline
from models.energy import XI_N, fit_threshold_scale


class Siamese(DistanceBaseline):
    """Standard Siamese network (Bromley et al. 1993; paper eq. 2): one notion of similarity for everyone.

    Ignores workers and grids. Per pair, with d = ‖f(i) − f(j)‖₂:
    L = l·d + (1 − l)·[ξ_n − d]₊ + λ2‖x_i‖₂ + λ2‖x_j‖₂   (eq. 2 plus §3.3's regulariser),
    ξ_n = 6 and λ2 = 1e-3 as for the CEN (supplement A), so the two differ
    only by the CEN's attribute weighting, margins and γ. Prediction:
    same iff d < ξ_n/2, the midpoint of the two targets (0 and ξ_n).
    """

    name = "siamese"

    def __init__(self, K: int = 10, *, xi_n: float = XI_N, lambda2: float = 1e-3, **kwargs):
        super().__init__(K, **kwargs)
        self.xi_n, self.lambda2 = xi_n, lambda2

    def _batch_loss(self, batch: Pairs) -> torch.Tensor:
        x_i, x_j = self._embed(batch.i, batch.j)
        d = torch.linalg.vector_norm(x_i - x_j, dim=-1)
        reg = torch.linalg.vector_norm(x_i, dim=-1) + torch.linalg.vector_norm(x_j, dim=-1)
        return (batch.label * d + (1 - batch.label) * torch.relu(self.xi_n - d) + self.lambda2 * reg).mean()

    def _calibrate(self, d: np.ndarray, label: np.ndarray) -> tuple[float, float]:
        s = fit_threshold_scale(0.5 * self.xi_n - d, label)
        return s * 0.5 * self.xi_n, s
