"""Which grid a person sees next: one function, so a smarter choice can replace it.

A chooser is called as ``choose(worker_id, grids, counts, answered)`` with the
grids (``cen_bayes.app.grids.Grids``, file order), the number of answers each
grid has so far and the grids this worker already answered; it returns a
grid id, or None when the worker has answered every grid. ``create_app``
takes it as an argument (``choose=``), so e.g. a chooser that reads a fitted
run and picks the most informative grid plugs in without touching the rest.
"""

from __future__ import annotations

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
