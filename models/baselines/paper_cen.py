"""The point-estimate Context Embedding Network, trained exactly as the paper trains it.

Kim, Mac Aodha, Perona, "Context Embedding Networks" (CVPR 2018), §3 and
supplement A. This is the reference the Bayesian CEN (``models/cen/model.py``) and
the other baselines are compared against, for accuracy and for speed, so it
follows the published recipe and nothing else:

* worker encoder   a^w = q_φ(o(w)): one-hot → 200 ReLU → 200 ReLU → K ReLU  (§3.1.1)
* context encoder  a^g = p_θ(s(g)): S-hot  → 200 ReLU → 200 ReLU → K ReLU  (§3.1.2)
* image encoder    x_i = f_ψ(o(i)): one-hot → 200 ReLU → K (linear)        (§3.1.3)
* a = a^w ('worker', eq. 3), a^g ('context', eq. 4) or a^w + a^g ('mixture', eq. 5)
* d = ‖a ⊙ (x_i − x_j)‖₂
* per-pair loss (eq. 8) γ·l·[d − ξ_p]₊ + (1 − l)·[ξ_n − d]₊ + λ1‖a‖₁ + λ2‖x_i‖₂ + λ2‖x_j‖₂,
  averaged over minibatches of 100 pairs, Adam(1e-3, β = (0.9, 0.999)), 20 epochs,
  λ1 = 5e-6, λ2 = 1e-3, γ = 5, ξ_p = 1, ξ_n = 6 (supplement A);
* prediction (§4.5): "same group" iff d < (ξ_n + ξ_p)/2.

Two readings of the text are fixed here. Eq. 8 prints the negative term as
[ξ_n − d(x_i, x_j)]₊ without ``a``; eq. 6-7, the sentence introducing eq. 8
("the final loss function") and the prediction rule all use the weighted
distance, so the missing ``a`` is a typo and both terms use d(x_i, x_j; a).
The norms in the regularisers are plain (not squared) L1 / L2 norms, as
written. The final ReLU of the attribute encoders is what makes a ≥ 0 and,
with the L1 penalty, sparse ("ReLU non-linearities", §3.1); the image encoder
ends linearly so embeddings can take either sign.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from cen_bayes.crowd import CrowdData, Pairs
from cen_bayes.splits import Split
from models.energy import GAMMA, XI_N, XI_P, fit_threshold_scale, paper_pair_loss, weighted_distance
from models.encoders import context_encoder, image_encoder, padded_grid_sets, worker_encoder
from models.pair_method import PairMethod
from models.baselines.point_training import train_minibatch

VARIANTS = ("worker", "context", "mixture")

# Pairs scored per forward pass at prediction / calibration time.
_EVAL_CHUNK = 1 << 16


class CENNetwork(nn.Module):
    """The three encoders of Fig. 2; only those the variant uses are built."""

    def __init__(self, variant: str, n_workers: int, n_images: int, K: int, hidden: int = 200):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        # q_φ: one-hot(worker) -> hidden ReLU -> hidden ReLU -> K ReLU
        self.worker_encoder = None if variant == "context" else worker_encoder(n_workers, K, hidden)
        # p_θ: S-hot(grid image set) -> hidden ReLU -> hidden ReLU -> K ReLU
        self.context_encoder = None if variant == "worker" else context_encoder(n_images, K, hidden)
        self.image_encoder = image_encoder(n_images, K, hidden)

    def activation(self, worker: torch.Tensor, sets: torch.Tensor | None) -> torch.Tensor:
        """a = a^w (eq. 3), a^g (eq. 4) or a^w + a^g (eq. 5); ``sets`` is each row's grid image set."""
        if self.variant == "worker":
            return self.worker_encoder(worker)
        if self.variant == "context":
            return self.context_encoder(sets)
        return self.worker_encoder(worker) + self.context_encoder(sets)

    def forward(self, worker, sets, i, j):
        """(a, x_i, x_j) for a batch of pairs; both images go through f_ψ in one pass."""
        x_i, x_j = self.image_encoder(torch.cat([i, j])).chunk(2)
        return self.activation(worker, sets), x_i, x_j


class PaperCEN(PairMethod):
    """CEN point estimate with the paper's architecture, loss (eq. 8) and training recipe.

    ``fit(data, split)`` trains on the pairs of ``split.train_hits``.
    ``predict(data, pairs)`` applies the paper's rule d < (ξ_n + ξ_p)/2 (§4.5).

    Probabilities. The recipe yields a distance, not a probability. So that it
    can be scored by NLL / ECE / Brier next to probabilistic models,
    ``predict_proba`` returns σ(s·((ξ_n + ξ_p)/2 − d)), where the single scale
    s > 0 is fitted after training by one-parameter logistic regression of the
    training labels on (ξ_n + ξ_p)/2 − d (scale-only Platt scaling, s searched
    in [1e-3, 1e3]). There is no intercept, so P = 0.5 exactly at the paper's
    threshold and ``predict == (predict_proba > 0.5)``: calibration changes
    confidence, never a decision. This is an addition to the paper, not part
    of it; s is fitted on the same pairs the network was trained on, so it
    tends to be over-confident on held-out grids — keep that in mind when
    comparing NLL.

    Held-out grids: the context encoder reads the held-out grid's image set
    (from ``data.grid_ptr`` / ``data.grid_image``) — scoring unseen grids is
    what it is for; the worker must be one seen in training.

    Reproducibility: parameter initialisation uses ``torch.manual_seed(seed)``
    inside ``torch.random.fork_rng`` (the global RNG is left as it was), the
    batch order a generator seeded with ``seed``; the same seed on the same
    CPU with the same ``torch.get_num_threads()`` gives identical results (a
    different thread count changes float summation order, hence the trained
    network). On a GPU, CUDA's embedding backward kernels are not guaranteed
    deterministic, so runs may differ in the last bits.

    Fitted attributes: ``embedding_`` (n_images, K) image embeddings x;
    ``worker_activation_`` (n_workers, K) a^w (None for 'context');
    ``grid_activation_`` (n_grids, K) a^g of every grid in ``data``, held-out
    ones included (None for 'worker'); ``scale_`` s; ``loss_history_`` mean
    training loss per epoch; ``fit_seconds_`` wall time of ``fit`` (training
    plus calibration); ``network_`` the trained ``CENNetwork``.
    """

    def __init__(
        self,
        variant: str = "mixture",
        K: int = 10,
        *,
        hidden: int = 200,
        epochs: int = 20,
        batch_size: int = 100,
        lr: float = 1e-3,
        lambda1: float = 5e-6,
        lambda2: float = 1e-3,
        gamma: float = GAMMA,
        xi_p: float = XI_P,
        xi_n: float = XI_N,
        seed: int = 0,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.K, self.hidden = variant, K, hidden
        self.name = "paper-cen" if variant == "mixture" else f"paper-{variant}"
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.lambda1, self.lambda2 = lambda1, lambda2
        self.gamma, self.xi_p, self.xi_n = gamma, xi_p, xi_n
        self.seed, self.device, self.progress = seed, torch.device(device), progress

    @property
    def threshold(self) -> float:
        """The paper's decision distance (ξ_n + ξ_p)/2 (§4.5)."""
        return 0.5 * (self.xi_n + self.xi_p)

    # ----------------------------------------------------------------- loss
    def _batch_loss(self, sets: torch.Tensor | None, batch: Pairs) -> torch.Tensor:
        """Eq. 8 averaged over a batch; ``sets`` are the padded grid sets on the device."""
        a, x_i, x_j = self.network_(batch.worker, None if sets is None else sets[batch.grid], batch.i, batch.j)
        return paper_pair_loss(batch.label, a, x_i, x_j, self.gamma, self.xi_p, self.xi_n,
                               self.lambda1, self.lambda2).mean()

    def loss(self, data: CrowdData, pairs: Pairs) -> torch.Tensor:
        """The training objective (eq. 8, mean over ``pairs``) at the current parameters."""
        self._check_fitted(data)
        return self._batch_loss(self._sets(data), pairs.to(self.device))

    # ------------------------------------------------------------------ fit
    def fit(self, data: CrowdData, split: Split) -> "PaperCEN":
        """Train on the pairs of ``split.train_hits`` with the supplement-A recipe; returns self."""
        start = time.perf_counter()
        train_mask, _ = split.pair_masks(data)
        train = data.pairs.subset(train_mask)
        if len(train) == 0:
            raise ValueError("the split has no training pairs")
        self.n_workers_, self.n_images_, self.n_grids_ = data.n_workers, data.n_images, data.n_grids
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.network_ = CENNetwork(self.variant, data.n_workers, data.n_images, self.K, self.hidden)
        self.network_.to(self.device)
        sets = self._sets(data)
        self.loss_history_ = train_minibatch(
            self.network_, lambda batch: self._batch_loss(sets, batch), train,
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
            device=self.device, progress=self.progress, desc=f"PaperCEN[{self.variant}]",
        )
        self.scale_ = fit_threshold_scale(self.threshold - self.distance(data, train), train.label.numpy())
        self._store_fitted(data)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    @torch.no_grad()
    def _store_fitted(self, data: CrowdData) -> None:
        net, dev = self.network_, self.device
        self.embedding_ = net.image_encoder(torch.arange(data.n_images, device=dev)).cpu().numpy()
        self.worker_activation_ = (None if net.worker_encoder is None else
                                   net.worker_encoder(torch.arange(data.n_workers, device=dev)).cpu().numpy())
        self.grid_activation_ = (None if net.context_encoder is None else
                                 net.context_encoder(self._sets(data)).cpu().numpy())

    # -------------------------------------------------------------- predict
    @torch.no_grad()
    def distance(self, data: CrowdData, pairs: Pairs) -> np.ndarray:
        """d(x_i, x_j; a) per pair (eq. 3-5), float32."""
        self._check_fitted(data)
        sets, out = self._sets(data), []
        for start in range(0, len(pairs), _EVAL_CHUNK):
            chunk = pairs.subset(slice(start, start + _EVAL_CHUNK)).to(self.device)
            a, x_i, x_j = self.network_(chunk.worker, None if sets is None else sets[chunk.grid], chunk.i, chunk.j)
            out.append(weighted_distance(a, x_i, x_j).cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def predict_proba(self, data: CrowdData, pairs: Pairs) -> np.ndarray:
        """P(same group) per pair: σ(s·((ξ_n + ξ_p)/2 − d)), float64 (see the class docstring)."""
        z = self.scale_ * (self.threshold - self.distance(data, pairs).astype(np.float64))
        return expit(z)

    def predict(self, data: CrowdData, pairs: Pairs) -> np.ndarray:
        """Hard labels by the paper's rule (§4.5): 1 iff d < (ξ_n + ξ_p)/2."""
        return (self.distance(data, pairs).astype(np.float64) < self.threshold).astype(np.int64)

    @torch.no_grad()
    def hit_activations(self, data: CrowdData, hit_index) -> np.ndarray:
        """(n, K) activation a of the given HITs (codes or a boolean mask over ``data.hits``).

        Its argmax is the paper's prediction of the attribute used (§4.3).
        """
        self._check_fitted(data)
        hit_index = np.asarray(hit_index)
        if hit_index.dtype == bool:
            hit_index = np.flatnonzero(hit_index)
        worker = torch.as_tensor(data.hits["worker"].to_numpy()[hit_index], dtype=torch.int64, device=self.device)
        grid = torch.as_tensor(data.hits["grid"].to_numpy()[hit_index], dtype=torch.int64, device=self.device)
        sets = self._sets(data)
        return self.network_.activation(worker, None if sets is None else sets[grid]).cpu().numpy()

    def hit_attribute_probabilities(self, data: CrowdData, hit_index) -> np.ndarray:
        """(n, K) one-hot of each HIT's argmax activation: the paper's call of the attribute used."""
        dims = self.hit_activations(data, hit_index).argmax(1)
        return np.eye(self.K)[dims]

    # -------------------------------------------------------------- helpers
    def _sets(self, data: CrowdData) -> torch.Tensor | None:
        """Padded grid image sets on the device, or None when the variant has no context encoder."""
        return None if self.variant == "worker" else padded_grid_sets(data).to(self.device)

    def _check_fitted(self, data: CrowdData) -> None:
        if not hasattr(self, "network_"):
            raise RuntimeError("PaperCEN is not fitted; call fit(data, split) first")
        if (data.n_workers, data.n_images) != (self.n_workers_, self.n_images_):
            raise ValueError(
                f"data has {data.n_workers} workers / {data.n_images} images, the model was fitted on "
                f"{self.n_workers_} / {self.n_images_}; use the CrowdData it was fitted on"
            )
