"""Which grid a person sees next: one function, so a smarter choice can replace it.

A chooser is called as ``choose(worker_id, grids, counts, answered)`` with the
grids (``cen_bayes.app.grids.Grids``, file order), the number of answers each
grid has so far and the grids this worker already answered; it returns a
grid id, or None when the worker has answered every grid. ``create_app``
takes it as an argument (``choose=``): ``fewest_answers`` by default,
``MostInformative`` with a fitted model (``serve --run``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Set

from cen_bayes.app.grids import Grids


def fewest_answers(worker_id: str, grids: Grids, counts: Mapping[str, int], answered: Set[str]) -> str | None:
    """The unanswered grid with the fewest answers so far, ties by file order: every grid gets its
    first answers before any gets many, so an early stop still covers the grids evenly."""
    best = None
    for grid in grids.order:
        if grid not in answered and (best is None or counts.get(grid, 0) < counts.get(best, 0)):
            best = grid
    return best


class MostInformative:
    """A chooser that offers the unanswered grid expected to teach a fitted Bayesian CEN most.

    Each grid of the grids file is scored once by its expected information
    gain about the model (``inference.design.grid_information``): for a new
    worker from the crowd at start-up, and for a worker the fit has trained
    on (their own bias) on their first request, then kept, so a request
    costs a lookup. An image the fit never saw counts as a new image. The
    scores stay as they are until the model is refitted on the answers
    (design, collect, fit, design again), so each answer a grid already has
    divides its score by one more (score / (1 + answers)): a second sorting
    of the same images repeats much of what the first told the model, and
    without it everyone would be offered the same few grids. Ties go to the
    grids file's order.
    """

    def __init__(self, cen, grids: Grids, seed: int = 0):
        from inference.design import grid_information, trained_worker

        self._score = lambda worker: grid_information(cen, grids.images, worker, seed=seed)
        self._trained = lambda worker_id: trained_worker(cen, worker_id)
        self._scores = {None: self._score(None)}  # by worker code; None: a new worker from the crowd
        self._lock = threading.Lock()  # requests run in threads: score each worker once

    def scores(self, worker_id: str) -> dict[str, float]:
        """Each grid's expected information gain from ``worker_id``'s answer (a new worker's unless the
        fit trained on them)."""
        code = self._trained(worker_id)
        with self._lock:
            if code not in self._scores:
                self._scores[code] = self._score(code)
            return self._scores[code]

    def __call__(self, worker_id: str, grids: Grids, counts: Mapping[str, int], answered: Set[str]) -> str | None:
        scores = self.scores(worker_id)
        best, best_value = None, float("-inf")
        for grid in grids.order:
            value = scores[grid] / (1 + counts.get(grid, 0))
            if grid not in answered and value > best_value:
                best, best_value = grid, value
        return best
