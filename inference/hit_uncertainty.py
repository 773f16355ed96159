"""Which HITs does the model not explain by one attribute?

Each HIT's row of attribute probabilities (``p_attr``: K dims, then
P(overall) for the kind variant, then P(noise) for the kind and choice variants) gives two numbers:

* ``entropy`` (nats): how spread the row is;
* ``p_unexplained`` = 1 − max_k P(dim k) (P(overall) counted as one more
  option): the probability that no single sort is the one the worker used
  (noise, or mass split between options).

A HIT is ``uncertain`` when p_unexplained > 0.5 or entropy > log 2 (at
least two options as likely as a coin flip). Entropy alone is not enough:
a HIT of ~24 images has ~276 pairs, so the choice variant's posterior is
nearly always sharp, and a submission it calls noise is called so with
confidence (entropy ≈ 0). In ``benchmarks/diagnostics.py`` the entropy
rule flagged no HIT of the choice variant on any simulated dataset, while
for the mixture variant (whose probabilities are shares of posterior draws)
it was the better of the two rules.
"""

from __future__ import annotations

import math

import numpy as np

from models.cen import choices_beyond_dims

UNCERTAIN_ABOVE = 0.5  # on p_unexplained
HIGH_ENTROPY = math.log(2)


def attribute_entropy(p_attr: np.ndarray) -> np.ndarray:
    """−Σ p log p of each row, nats."""
    p = np.asarray(p_attr, dtype=np.float64)
    return 0.0 - np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1)


def unexplained(p_attr: np.ndarray, K: int) -> np.ndarray:
    """P(no one sort explains the HIT) = 1 − max over the K attribute columns and, in the kind
    variant, the overall (category) sort: a HIT sorted by kind is explained, not noise."""
    p = np.asarray(p_attr, dtype=np.float64)
    explained = K + int("overall" in choices_beyond_dims(p.shape[1], K))
    return 1.0 - p[:, :explained].max(1)


def hit_uncertainty(p_attr: np.ndarray, K: int) -> dict[str, np.ndarray]:
    """The per-HIT columns ``hits.csv`` gets: entropy, p_unexplained, uncertain."""
    p_unexplained, entropy = unexplained(p_attr, K), attribute_entropy(p_attr)
    return {"entropy": entropy, "p_unexplained": p_unexplained,
            "uncertain": (p_unexplained > UNCERTAIN_ABOVE) | (entropy > HIGH_ENTROPY)}
