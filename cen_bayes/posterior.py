"""The posterior as an ArviZ InferenceData, named by the user's own ids.

Every group holds one chain, shape (1, n_draws, ...). SVI's draws come
independently from the variational guide: they are not a Markov chain, so
r-hat and ESS (which compare chains and measure autocorrelation) say nothing
about them, and splitting the draws into pseudo-chains would only make those
numbers look meaningful. With one chain ``az.summary`` has no r-hat (NaN,
with a shape warning), and its ESS of independent draws only restates how
many there are; ``az.summary(..., kind="stats")`` gives the mean, sd and HDI
alone. ``az.loo`` (ArviZ 0.23) takes one chain's relative efficiency as 1,
which is right for independent draws. Whether the guide is a good posterior
is a question for ``inference.diagnostics`` (ELBO trace, PSIS k-hat), not
for a chain diagnostic.

The conversion goes through ``az.from_dict`` — the one constructor that
both ArviZ 0.23 (Python 3.11: keyword groups, returns InferenceData) and 1.x
(one dict of groups, returns a DataTree) have — and lives only here.
"""

from __future__ import annotations

from pathlib import Path

import arviz as az
import numpy as np

from cen_bayes.atomic import atomic_path


def _one_chain(group: dict) -> dict:
    """(draws, ...) arrays -> (1, draws, ...): one chain of independent draws."""
    return {name: np.asarray(value)[np.newaxis] for name, value in group.items()}


def to_inference_data(posterior: dict, *, coords: dict, dims: dict, observed_data: dict | None = None,
                      posterior_predictive: dict | None = None, log_likelihood: dict | None = None):
    """Build InferenceData from draw-first arrays (observed_data: plain arrays), all draws in one chain."""
    groups = {"posterior": _one_chain(posterior)}
    if posterior_predictive:
        groups["posterior_predictive"] = _one_chain(posterior_predictive)
    if log_likelihood:
        groups["log_likelihood"] = _one_chain(log_likelihood)
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
