"""Bayesian Crowd Clustering (Gomes, Welinder, Krause, Perona, "Crowdclustering", NIPS 2011).

The baseline of the CEN paper (§4, [6]): one *entangled* image embedding and
every worker a linear classifier of image pairs in it,

    x_i ~ N(0, σ_x² I_K)                       image embedding
    W0  ~ N(0, σ_0²),   W_j ~ N(W0, σ_w²)      worker j's symmetric K×K matrix, around a shared mean
    τ0  ~ N(0, σ_τ0²),  τ_j ~ N(τ0, σ_τ²)      worker j's bias, around a shared mean
    l   ~ Bernoulli(σ(x_aᵀ W_j x_b + τ_j))     label of pair (a, b) in a HIT of worker j

Gomes' hierarchical version: workers with few HITs borrow strength from the
shared (W0, τ0). Only the K(K+1)/2 entries of the upper triangle of W_j are
latent and mirrored: the label of (a, b) is that of (b, a), so an antisymmetric
part would be unidentified. Fitted by SVI with a mean-field Normal guide
(AutoNormal, analytic KLs via TraceMeanField_ELBO), all pairs as tensors. The
bilinear form has a sign/rotation symmetry (x → Rx, W → RWRᵀ); it leaves every
prediction unchanged, but embedding axes are arbitrary.
"""

from __future__ import annotations

import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoNormal, init_to_median

from cen_bayes.crowd import CrowdData, Pairs
from cen_bayes.metrics import cluster_embedding
from cen_bayes.splits import Split
from models.pair_method import PairMethod
from models.spectral import spectral_init
from models.svi_trainer import run_svi


class BayesianCrowdClustering(PairMethod):
    """Gomes et al.'s crowdclustering model, fitted by SVI; ``predict_proba`` uses the known worker.

    Priors (our choices; Gomes et al.'s values were not checked). σ_x = 1 pins
    the scale of the embedding: the bilinear form only sees the product of
    the scales of x and W. σ_0 = σ_w = 2 lets one unit-scale dimension give
    logits of ±4 (P ≈ 0.02 / 0.98), which a worker who sorts by one attribute
    needs; σ_τ0 = σ_τ = 2 covers base rates of "same" from ~0.02 to ~0.98.
    With retina's ~145k training pairs they barely matter: held-out accuracy
    hardly moves as σ_w ranges over an order of magnitude.

    Inference. Full-batch SVI (``batch_size=None``), ``steps`` steps of
    ClippedAdam(lr, clip_norm 10) decaying ×0.1 over the fit, by the project's
    one SVI loop (``models.svi_trainer``: progress, ``checkpoint`` / ``resume``,
    a clean stop on Ctrl-C); ``batch_size`` pairs per step (one seeded
    permutation per epoch, the plate rescales the likelihood) for crowds too
    large for one pass. 400 steps at lr = 0.05: doubling the steps lowers the
    −ELBO only a little, and the −ELBO at lr = 0.05 ends close to that at
    lr = 0.1 and well below that at lr = 0.02, so it is near the optimum
    without needing 800 steps. The guide starts
    at the spectral embedding of the co-association matrix (``models.spectral``,
    scaled to σ_x), the prior medians elsewhere, scales 0.05. x = 0 is a
    saddle of the bilinear form, so x must not start there; the spectral start
    is cheap and ends about where a random N(0, 0.1²) start does.

    Known weakness, kept because it is the model's: the S(S−1)/2 pairs of a
    HIT (276 for S = 24) come from one grouping but are scored as independent, so the posterior
    is far too sure and the fit memorises training HITs: on retina, held-out
    accuracy and NLL get worse from 100 steps to 400, and training accuracy
    ends far above held-out. Stopping early by held-out score would tune on
    the test split, so the default runs close to convergence.

    The numbers behind the priors, steps, learning rate, start and memorising
    above: benchmarks/README.md, "Measurements behind the defaults".

    Prediction. P(same) for pair (a, b) of worker j is the posterior
    predictive mean of σ(x_aᵀ W_j x_b + τ_j) over ``draws`` guide draws.
    Workers must have been seen in training (their classifier is the model);
    grids need not; an image in no training pair keeps its prior N(0, σ_x²).

    Seeding: ``fit`` calls ``pyro.set_rng_seed(seed)`` (torch's, NumPy's and
    Python's global RNGs), so a fixed seed and thread count give identical
    fits; ``predict_proba`` draws from ``seed`` inside ``torch.random.fork_rng``
    and leaves the global RNG as it was. Parameters live in the model's own
    param-store scope, so fits of other Pyro models in the process don't clash.

    Fitted: ``embedding_`` / ``embedding_sd_`` (n_images, K) posterior mean /
    sd of x; ``loss_history_`` −ELBO per step per training pair;
    ``fit_seconds_``; ``guide_`` (AutoNormal).
    """

    name = "bcc"

    def __init__(self, K: int = 10, *, steps: int = 400, lr: float = 0.05, draws: int = 100,
                 batch_size: int | None = None, sigma_x: float = 1.0, sigma_0: float = 2.0, sigma_w: float = 2.0,
                 sigma_tau0: float = 2.0, sigma_tau: float = 2.0, seed: int = 0, device="cpu", progress=True,
                 checkpoint=None, resume: bool = False):
        self.K, self.steps, self.lr, self.draws, self.batch_size = K, steps, lr, draws, batch_size
        self.checkpoint, self.resume = checkpoint, resume
        self.sigma_x, self.sigma_0, self.sigma_w = sigma_x, sigma_0, sigma_w
        self.sigma_tau0, self.sigma_tau = sigma_tau0, sigma_tau
        self.seed, self.device, self.progress = seed, torch.device(device), progress
        rows, cols = torch.triu_indices(K, K)
        tri = torch.empty(K, K, dtype=torch.int64)
        tri[rows, cols], tri[cols, rows] = torch.arange(len(rows)), torch.arange(len(rows))
        self._tri = tri.to(self.device)  # (K, K) position of W[k, l] = W[l, k] in the upper triangle

    # ------------------------------------------------------------------ model
    def _logits(self, x, W, tau, worker, a, b):
        """x_aᵀ W_j x_b + τ_j per pair, via (W_j x_i) for every worker and image: O((W·N + P)·K) memory."""
        Wx = torch.einsum("wkl,il->wik", W[:, self._tri], x)  # (n_workers, n_images, K)
        return (Wx[worker, b] * x[a]).sum(-1) + tau[worker]

    def _model(self, index=None):
        d, K, T = self.device, self.K, self.K * (self.K + 1) // 2
        zero = torch.zeros((), device=d)
        W0 = pyro.sample("W0", dist.Normal(zero, self.sigma_0).expand([T]).to_event(1))
        tau0 = pyro.sample("tau0", dist.Normal(zero, self.sigma_tau0))
        with pyro.plate("workers", self.n_workers_, device=d):
            W = pyro.sample("W", dist.Normal(W0, self.sigma_w).to_event(1))
            tau = pyro.sample("tau", dist.Normal(tau0, self.sigma_tau))
        with pyro.plate("images", self.n_images_, device=d):
            x = pyro.sample("x", dist.Normal(zero, self.sigma_x).expand([K]).to_event(1))
        t = self._train
        with pyro.plate("pairs", len(t), subsample=index, device=d) as idx:
            pyro.sample("labels", dist.Bernoulli(logits=self._logits(x, W, tau, t.worker[idx], t.i[idx], t.j[idx])),
                        obs=t.label[idx])

    # -------------------------------------------------------------------- fit
    def fit(self, data: CrowdData, split: Split) -> "BayesianCrowdClustering":
        """SVI on the pairs of ``split.train_hits``; returns self."""
        start = time.perf_counter()
        train = data.pairs.subset(split.pair_masks(data)[0])
        if len(train) == 0:
            raise ValueError("the split has no training pairs")
        self.n_workers_, self.n_images_, n = data.n_workers, data.n_images, len(train)
        self._train = train.to(self.device)
        x0 = self.sigma_x * torch.as_tensor(spectral_init(train, data.n_images, self.K, self.seed), dtype=torch.float32)
        init = lambda site: x0.to(self.device) if site["name"] == "x" else init_to_median(site)  # noqa: E731
        with pyro.get_param_store().scope() as self._params:
            pyro.set_rng_seed(self.seed)
            pairs_plate = lambda index=None: pyro.plate("pairs", n, subsample=index, device=self.device)  # noqa: E731
            self.guide_ = AutoNormal(self._model, init_loc_fn=init, init_scale=0.05, create_plates=pairs_plate)
            self.guide_(torch.arange(n, device=self.device) if self.batch_size and self.batch_size < n else None)
            run = run_svi(self._model, self.guide_, n_units=n, batch=self.batch_size, steps=self.steps, lr=self.lr,
                          seed=self.seed, loss_scale=n, desc="BCC", progress=self.progress,
                          checkpoint=self.checkpoint, resume=self.resume, device=self.device)
            self.loss_history_, self.interrupted_ = run.losses, run.interrupted
            self.embedding_ = self.guide_.locs.x.detach().cpu().numpy().astype(np.float64)
            self.embedding_sd_ = self.guide_.scales.x.detach().cpu().numpy().astype(np.float64)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    # --------------------------------------------------------------- predict
    @torch.no_grad()
    def predict_proba(self, data: CrowdData, pairs: Pairs) -> np.ndarray:
        """Posterior predictive mean of σ(x_aᵀ W_j x_b + τ_j) over ``draws`` guide draws, float64.

        Draws are seeded with ``seed``, so the same fit gives the same probabilities.
        """
        if not hasattr(self, "guide_"):
            raise RuntimeError("call fit first")
        if data.n_workers != self.n_workers_ or data.n_images != self.n_images_:
            raise ValueError("predict on the CrowdData the model was fitted on")
        p = pairs.to(self.device)
        total = torch.zeros(len(p), dtype=torch.float64, device=self.device)
        cuda = [self.device] if self.device.type == "cuda" else []
        with pyro.get_param_store().scope(self._params), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)  # inside fork_rng: the global RNG is left as it was
            for _ in range(self.draws):
                s = self.guide_()
                total += torch.sigmoid(self._logits(s["x"], s["W"], s["tau"], p.worker, p.i, p.j)).double()
        return (total / self.draws).cpu().numpy()

    def cluster(self, n_clusters: int, method: str = "kmeans") -> np.ndarray:
        """Cluster labels of the images from their posterior-mean embedding (``cluster_embedding``)."""
        return cluster_embedding(self.embedding_, n_clusters, method, seed=self.seed)
