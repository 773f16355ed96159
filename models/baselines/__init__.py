"""The methods the Bayesian CEN is compared with, each a ``models.pair_method.PairMethod``:
Bayesian crowd clustering (``bcc``), the paper's point-estimate CEN trained by its recipe
(``paper_cen``), and the attribute-blind metric baselines Siamese, triplet and the CSN oracle
(``siamese``, ``triplet``, ``csn``, sharing ``distance`` and ``triplet_sampling``); the point
estimates train with ``point_training``."""
