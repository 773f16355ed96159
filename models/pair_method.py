"""The interface every compared method shares, so one CLI and one benchmark can run them all.

A method is fitted on the training HITs of a ``Split`` of a ``CrowdData`` and
then predicts P(same group) for any pairs of that data (held-out grids
included; workers must have been seen in training when the method models
workers). The Bayesian CEN has its own richer path (``inference.evaluate``);
the baselines and the paper's point-estimate CEN implement this.
"""

from __future__ import annotations

import numpy as np

from cen_bayes.crowd import CrowdData, Pairs
from cen_bayes.splits import Split


class PairMethod:
    """Fit on a split, predict pairs; expose the learned image embedding.

    After ``fit``: ``embedding_`` (n_images, K) image coordinates (posterior
    means for Bayesian methods), ``embedding_sd_`` (n_images, K) posterior sd
    or None for point estimates, ``fit_seconds_`` wall time of ``fit``.
    """

    name = "method"
    embedding_sd_: np.ndarray | None = None

    def fit(self, data: CrowdData, split: Split) -> "PairMethod":
        raise NotImplementedError

    def predict_proba(self, data: CrowdData, pairs: Pairs) -> np.ndarray:
        """P(same group) per pair, float64 in [0, 1]."""
        raise NotImplementedError

    def hit_attribute_probabilities(self, data: CrowdData, hit_index) -> np.ndarray | None:
        """(n, K) probability that each HIT used each embedding dim; None for attribute-blind methods."""
        return None
