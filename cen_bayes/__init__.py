"""cen-bayes: learn what crowds mean by "similar" (Bayesian Context Embedding Networks in Pyro).

``from cen_bayes import CEN`` gives the estimator (``cen_bayes.api``); it is
imported on first use, so the data layer (``cen_bayes.crowd``, ``.datasets``,
...) loads without the model and inference code.
"""


def __getattr__(name):
    if name == "CEN":
        from cen_bayes.api import CEN
        return CEN
    raise AttributeError(f"module 'cen_bayes' has no attribute {name!r}")


__all__ = ["CEN"]
