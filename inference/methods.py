"""Every method ``python -m inference.svi --method NAME`` can fit, by name.

Each is a ``PairMethod`` built here, so the CLI and the benchmarks make them
the same way: ``cen`` is the Bayesian CEN (``cen_bayes.api.CEN``, which also
has a richer path with its posterior extras, ``inference.evaluate``), the
others the baselines.
"""

from __future__ import annotations

from cen_bayes.crowd import CrowdData
from models.pair_method import PairMethod
from models.baselines.paper_cen import PaperCEN

METHODS = ("cen", "bcc", "siamese", "triplet", "csn", "paper-cen", "paper-worker", "paper-context")


class OracleError(ValueError):
    """An oracle method was asked for on data without the truth it needs."""


PAPER_VARIANTS = {"paper-cen": "mixture", "paper-worker": "worker", "paper-context": "context"}


def make_method(name: str, data: CrowdData, sim=None, *, K: int = 10, seed: int = 0, device: str = "cpu",
                progress: bool = True, **options) -> PairMethod:
    """The baseline ``name`` with its defaults, overridden by ``options`` (constructor keywords,
    e.g. ``epochs``). ``csn`` is an oracle: it is given the attribute each HIT truly used, so it
    exists only for simulated data (``sim``)."""
    common = dict(K=K, seed=seed, device=device, progress=progress, **options)
    if name == "cen":
        from cen_bayes.api import CEN
        return CEN(**common)
    if name in PAPER_VARIANTS:
        return PaperCEN(PAPER_VARIANTS[name], **common)
    if name == "bcc":
        from models.baselines.bcc import BayesianCrowdClustering
        return BayesianCrowdClustering(**common)
    if name == "siamese":
        from models.baselines.siamese import Siamese
        return Siamese(**common)
    if name == "triplet":
        from models.baselines.triplet import Triplet
        return Triplet(**common)
    if name == "csn":
        if sim is None:
            raise OracleError("csn is an oracle: it needs the attribute each HIT used, known only for the "
                             "built-in simulated datasets (--dataset)")
        from cen_bayes.datasets import true_hits
        from models.baselines.csn import CSNOracle
        return CSNOracle(true_hits(sim, data)["attribute"].to_numpy(), **common)
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
