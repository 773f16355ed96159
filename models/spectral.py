"""A data-driven starting point for the embedding: spectral embedding + ICA of co-association.

Fitting a CEN from a random embedding is a hard, slow search: each HIT's
attribute is nearly a hard choice, so the first few steps lock random
dimensions onto whatever they happen to match, and one attribute ends up
split across several dims. The labels already say where to start. Over all
training HITs, the share of workers who put images i and j together is

    C_ij ≈ Σ_k π_k · 1[i and j share the level of attribute k],

a sum of one block matrix per attribute, so the leading eigenvectors of the
doubly-centred C span the attributes' level contrasts. Attributes are
independent across images, so independent component analysis of that span
(scikit-learn's FastICA) rotates it into one component per attribute: on
simulated celeba each attribute gets a component clearly correlated with its
latent value, which a random start does not give (measured: benchmarks/README.md,
"Measurements behind the defaults").

Only the K leading eigenvectors are needed. Up to ``FULL_EIGH_IMAGES`` images
the full decomposition (LAPACK) is exact and takes a second or so; above it
its cost grows as N³ (tens of seconds at 5,000 images, paid by every
candidate of the automatic choice and by the final fit), while Lanczos
iteration (``scipy.sparse.linalg.eigsh``, from a fixed start vector, so runs
repeat) finds the leading K in about a second.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.sparse.linalg import eigsh
from sklearn.decomposition import FastICA
from sklearn.exceptions import ConvergenceWarning

from cen_bayes.crowd import Pairs

FULL_EIGH_IMAGES = 2000  # above it, the leading eigenvectors by Lanczos iteration (module docstring)


def co_association(pairs: Pairs, n_images: int) -> np.ndarray:
    """(N, N) share of labelled pairs of i and j that were grouped together.

    Shrunk towards the overall share by one pseudo-pair, so pairs never shown
    together sit at the mean instead of 0 or NaN.
    """
    flat = (pairs.i * n_images + pairs.j).cpu()
    same = torch.zeros(n_images * n_images, dtype=torch.float64).index_add_(0, flat, pairs.label.cpu().double())
    count = torch.bincount(flat, minlength=n_images * n_images).double()
    same, count = same.view(n_images, n_images), count.view(n_images, n_images)
    same, count = same + same.T, count + count.T
    overall = float(same.sum() / count.sum().clamp(min=1.0))
    return ((same + overall) / (count + 1.0)).numpy()


def spectral_init(pairs: Pairs, n_images: int, K: int, seed: int = 0) -> np.ndarray:
    """(N, K) starting embedding, each column ICA-rotated and scaled to unit variance."""
    C = co_association(pairs, n_images)
    C = C - C.mean(0, keepdims=True) - C.mean(1, keepdims=True) + C.mean()
    values, vectors = leading_eigenpairs(C, min(K, n_images - 1))
    Z = vectors * np.sqrt(np.clip(values, 1e-12, None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        S = FastICA(n_components=Z.shape[1], whiten="unit-variance", random_state=seed, max_iter=1000).fit_transform(Z)
    S = (S - S.mean(0)) / S.std(0).clip(min=1e-12)
    if S.shape[1] < K:  # fewer images than dims: pad with small random columns
        S = np.concatenate([S, 0.1 * np.random.default_rng(seed).standard_normal((n_images, K - S.shape[1]))], 1)
    return S


def leading_eigenpairs(C: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenvalues of the symmetric ``C``, descending, and their eigenvectors (columns)."""
    if len(C) <= FULL_EIGH_IMAGES:
        values, vectors = np.linalg.eigh(C)
    else:
        values, vectors = eigsh(C, k=k, which="LA", v0=np.ones(len(C)))
    top = np.argsort(values)[::-1][:k]
    return values[top], vectors[:, top]
