"""The Bayesian CEN: the model (``model``), its two sets of priors (``priors``), and the sparse
indexing that scores every pair of a HIT in one pass (``hit_pairs``, ``hit_images``, ``sparse``)."""

from models.cen.model import CHOICE_VARIANTS, VARIANTS, BayesianCEN, choices_beyond_dims
from models.cen.priors import ContextNet, CrowdPriors, PaperPriors, RadialLaplace, worker_prior

__all__ = ["BayesianCEN", "CHOICE_VARIANTS", "VARIANTS", "choices_beyond_dims", "ContextNet", "CrowdPriors",
           "PaperPriors", "RadialLaplace", "worker_prior"]
