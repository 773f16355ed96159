"""Models: what explains a crowd's labels, with no knowledge of how they are fitted.

* ``models.cen``: the Bayesian CEN (the model, its priors, the per-HIT pair indexing);
* ``models.baselines``: the methods it is compared with;
* shared by both: ``energy`` (the paper's dual-margin energy, eq. 6-8), ``encoders`` (the
  paper's networks), ``spectral`` (the embedding every fit starts from), ``svi_trainer``
  (the one SVI loop: checkpoints, signals, progress, resume) and ``pair_method`` (the
  interface every method offers the CLI and the benchmarks).

Nothing here imports ``inference``: fitting schedules, prediction and evaluation sit
above, in ``inference``, and the user-facing estimator on top, in ``cen_bayes.api``.
"""
