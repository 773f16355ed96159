"""What the three metric baselines (Siamese, triplet, CSN) share.

Siamese, triplet and CSN differ only in what they train on (pairs or
triplets) and their loss; ``DistanceBaseline`` holds the rest once: the
paper's image encoder f_ψ (``models.encoders.image_encoder``), seeded
initialisation, the shared minibatch loop with supplement A's recipe (batch
100, Adam 1e-3, 20 epochs), chunked distances, and turning a distance into
a probability.

Probabilities. Each method outputs a distance d. So that it can be scored by
NLL / ECE next to probabilistic models, P(same) = σ(α − β·d) is fitted after
training on the *training* pairs — an addition to the baselines, as in
``PaperCEN``. Triplet and CSN have no fixed threshold, so α, β come from an
unpenalised one-feature logistic regression. The Siamese loss has a natural
one (ξ_n/2: positives are pulled to 0, negatives pushed past ξ_n), so only a
scale s is fitted (``models.energy.fit_threshold_scale``) and α = s·ξ_n/2,
β = s, keeping ``predict`` the rule d < ξ_n/2. Fitted on training pairs, the
calibration tends to be over-confident on held-out grids.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from torch import nn

from cen_bayes.crowd import CrowdData, Pairs
from cen_bayes.splits import Split
from models.baselines.point_training import train_minibatch
from models.encoders import image_encoder
from models.pair_method import PairMethod

_EVAL_CHUNK = 1 << 16  # pairs scored per forward pass at prediction / calibration time


class DistanceBaseline(PairMethod):
    """Fit / predict for a model that scores pairs by a learned distance.

    Subclasses give ``_batch_loss(batch)``; optionally ``_modules(data)``
    (extra modules beside the ``encoder``), ``_training_set(data, train)``
    (default: the training pairs), ``_pair_distance(batch)`` (default
    ‖f(i) − f(j)‖₂) and ``_calibrate(d, label)``.

    Reproducibility: initialisation under ``torch.manual_seed(seed)`` inside
    ``torch.random.fork_rng`` (global RNG untouched), batch order and triplet
    draws from generators seeded with ``seed``; same seed, device and thread
    count give identical predictions.

    Fitted: ``network_`` (ModuleDict, ``encoder`` = f_ψ), ``embedding_``
    (n_images, K), ``intercept_`` α and ``slope_`` β of P(same) = σ(α − β·d),
    ``loss_history_`` mean loss per epoch, ``fit_seconds_`` (sampling,
    training and calibration).
    """

    def __init__(self, K: int = 10, *, hidden: int = 200, epochs: int = 20, batch_size: int = 100,
                 lr: float = 1e-3, seed: int = 0, device: str | torch.device = "cpu", progress: bool = True):
        self.K, self.hidden, self.epochs, self.batch_size, self.lr = K, hidden, epochs, batch_size, lr
        self.seed, self.device, self.progress = seed, torch.device(device), progress

    # ---------------------------------------------------------------- hooks
    def _modules(self, data: CrowdData) -> dict[str, nn.Module]:
        return {}

    def _training_set(self, data: CrowdData, train: Pairs):
        return train

    def _batch_loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def _embed(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """f_ψ of several index tensors in one forward pass."""
        return self.network_["encoder"](torch.cat(images)).chunk(len(images))

    def _pair_distance(self, batch: Pairs) -> torch.Tensor:
        x_i, x_j = self._embed(batch.i, batch.j)
        return torch.linalg.vector_norm(x_i - x_j, dim=-1)

    def _calibrate(self, d: np.ndarray, label: np.ndarray) -> tuple[float, float]:
        """(α, β) of P(same) = σ(α − β·d) by unpenalised logistic regression on d."""
        if len(np.unique(label)) < 2:  # one class: no slope to fit, predict the base rate
            return float(logit(np.clip(label.mean(), 1e-6, 1 - 1e-6))), 0.0
        fit = LogisticRegression(C=np.inf).fit(d.reshape(-1, 1), label)
        return float(fit.intercept_[0]), float(-fit.coef_[0, 0])

    # ------------------------------------------------------------------ fit
    def fit(self, data: CrowdData, split: Split) -> "DistanceBaseline":
        """Train on the pairs of ``split.train_hits``, then calibrate on them; returns self."""
        start = time.perf_counter()
        train = data.pairs.subset(split.pair_masks(data)[0])
        if len(train) == 0:
            raise ValueError("the split has no training pairs")
        self.n_images_ = data.n_images
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.network_ = nn.ModuleDict({"encoder": image_encoder(data.n_images, self.K, self.hidden),
                                           **self._modules(data)}).to(self.device)
        self.loss_history_ = train_minibatch(
            self.network_, self._batch_loss, self._training_set(data, train), epochs=self.epochs,
            batch_size=self.batch_size, lr=self.lr, seed=self.seed, device=self.device,
            progress=self.progress, desc=type(self).__name__)
        d = self.distance(data, train).astype(np.float64)
        self.intercept_, self.slope_ = self._calibrate(d, train.label.numpy().astype(np.int64))
        with torch.no_grad():
            self.embedding_ = self.network_["encoder"](torch.arange(data.n_images, device=self.device)).cpu().numpy()
        self.fit_seconds_ = time.perf_counter() - start
        return self

    # -------------------------------------------------------------- predict
    @torch.no_grad()
    def distance(self, data: CrowdData, pairs: Pairs) -> np.ndarray:
        """The method's distance per pair, float32, in chunks (memory stays flat on big test sets)."""
        if not hasattr(self, "network_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(data, split) first")
        if data.n_images != self.n_images_:
            raise ValueError(f"data has {data.n_images} images, the model was fitted on {self.n_images_}")
        out = [self._pair_distance(pairs.subset(slice(s, s + _EVAL_CHUNK)).to(self.device)).cpu()
               for s in range(0, len(pairs), _EVAL_CHUNK)]
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def predict_proba(self, data: CrowdData, pairs: Pairs) -> np.ndarray:
        """P(same group) = σ(α − β·d) per pair, float64."""
        return expit(self.intercept_ - self.slope_ * self.distance(data, pairs).astype(np.float64))

    def predict(self, data: CrowdData, pairs: Pairs) -> np.ndarray:
        """Hard labels: 1 iff P(same) > 0.5, i.e. d < α/β."""
        return (self.predict_proba(data, pairs) > 0.5).astype(np.int64)
