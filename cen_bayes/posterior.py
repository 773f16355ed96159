"""The posterior as an ArviZ InferenceData, named by the user's own ids.

SVI gives independent draws, not MCMC chains; they are split into pseudo-
chains so that ``az.summary``'s r-hat and ESS are defined (one chain gives
NaN). The conversion goes through ``az.from_dict`` — the one constructor that
both ArviZ 0.23 (Python 3.11: keyword groups, returns InferenceData) and 1.x
(one dict of groups, returns a DataTree) have — and lives only here.
"""

from __future__ import annotations

from pathlib import Path

import arviz as az
import numpy as np

from cen_bayes.atomic import atomic_path

N_CHAINS = 2


def _as_chains(group: dict, n_chains: int) -> dict:
    """(draws, ...) arrays -> (chain, draw, ...); draws beyond a multiple of n_chains are dropped."""
    out = {}
    for name, value in group.items():
        value = np.asarray(value)
        per_chain = value.shape[0] // n_chains
        out[name] = value[: per_chain * n_chains].reshape(n_chains, per_chain, *value.shape[1:])
    return out


def to_inference_data(posterior: dict, *, coords: dict, dims: dict, observed_data: dict | None = None,
                      posterior_predictive: dict | None = None, log_likelihood: dict | None = None,
                      n_chains: int = N_CHAINS):
    """Build InferenceData from draw-first arrays (observed_data: plain arrays)."""
    groups = {"posterior": _as_chains(posterior, n_chains)}
    if posterior_predictive:
        groups["posterior_predictive"] = _as_chains(posterior_predictive, n_chains)
    if log_likelihood:
        groups["log_likelihood"] = _as_chains(log_likelihood, n_chains)
    if observed_data:
        groups["observed_data"] = {k: np.asarray(v) for k, v in observed_data.items()}
    if int(az.__version__.split(".")[0]) >= 1:
        return az.from_dict(groups, coords=coords, dims=dims)
    return az.from_dict(**groups, coords=coords, dims=dims)


def write_netcdf(idata, path: str | Path) -> Path:
    """Write to ``path`` through a temporary file, so a killed run never leaves half a file."""
    with atomic_path(path) as partial:
        idata.to_netcdf(str(partial))
    return Path(path)
