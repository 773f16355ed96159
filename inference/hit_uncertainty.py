"""Which HITs does the model not explain by one attribute?

Each HIT's row of attribute probabilities (``p_attr``: K dims, then
P(noise) for the choice variant) gives two numbers:

* ``entropy`` (nats): how spread the row is;
* ``p_unexplained`` = 1 − max_k P(dim k): the probability that no single
  attribute dim is the one the worker used (noise, or mass split between
  dims). A HIT is ``uncertain`` when it exceeds 0.5.

The flag is not "entropy above a cut" because a HIT of ~24 images has
~276 pairs, so its posterior is nearly always sharp: a submission the
choice variant calls noise is called so with confidence (entropy ≈ 0).
``benchmarks/noisy_hits.py`` measures both rules against the simulator's
noisy HITs.
"""

from __future__ import annotations

import numpy as np

UNCERTAIN_ABOVE = 0.5


def attribute_entropy(p_attr: np.ndarray) -> np.ndarray:
    """−Σ p log p of each row, nats."""
    p = np.asarray(p_attr, dtype=np.float64)
    return 0.0 - np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1)


def unexplained(p_attr: np.ndarray, K: int) -> np.ndarray:
    """P(no single attribute dim explains the HIT) = 1 − max over the K attribute columns."""
    return 1.0 - np.asarray(p_attr, dtype=np.float64)[:, :K].max(1)


def hit_uncertainty(p_attr: np.ndarray, K: int) -> dict[str, np.ndarray]:
    """The per-HIT columns ``hits.csv`` gets: entropy, p_unexplained, uncertain."""
    p_unexplained = unexplained(p_attr, K)
    return {"entropy": attribute_entropy(p_attr), "p_unexplained": p_unexplained,
            "uncertain": p_unexplained > UNCERTAIN_ABOVE}
