"""The per-image and per-HIT tables a fit yields (``embeddings.csv``, ``hits.csv``; ``CEN.embeddings``,
``CEN.hits``), built one way for the Bayesian CEN and the baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cen_bayes.crowd import CrowdData
from cen_bayes.splits import Split
from models.cen import choices_beyond_dims


def embedding_table(images: pd.Index, mean: np.ndarray, sd: np.ndarray | None) -> pd.DataFrame:
    """``image_id``, ``mean_k`` per dim and, when the method has a posterior, ``sd_k``."""
    columns = {"image_id": np.asarray(images)}
    for k in range(mean.shape[1]):
        columns[f"mean_{k}"] = mean[:, k]
        if sd is not None:
            columns[f"sd_{k}"] = sd[:, k]
    return pd.DataFrame(columns)


def hit_table(data: CrowdData, split: Split, p_attr: np.ndarray | None, uncertainty: dict | None,
              K: int) -> pd.DataFrame:
    """One row per HIT (``data.hits`` order): ``worker_id``, ``grid_id``, ``split``, then, for methods
    that say which dim a HIT used, ``p_attr_k``, ``p_overall`` / ``p_noise`` where the variant has them,
    and the uncertainty columns (``inference.hit_uncertainty``)."""
    hits = data.hits[["worker_id", "grid_id"]].assign(split=split.labels()).reset_index(drop=True)
    if p_attr is None:
        return hits
    columns = [f"p_attr_{k}" for k in range(K)] + [f"p_{c}" for c in choices_beyond_dims(p_attr.shape[1], K)]
    return pd.concat([hits, pd.DataFrame(p_attr, columns=columns), pd.DataFrame(uncertainty or {})], axis=1)
