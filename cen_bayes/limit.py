"""The Bayes-optimal P(same) of a simulated dataset's pairs: the ceiling no method can pass.

A simulation keeps every hidden quantity, so for each pair of a HIT we can
ask what the true generative process (``cen_bayes.datasets``) says about it
before the HIT is answered. Conditioned on all that is fixed by then

- the images' latents, levels and categories,
- the grid's contents and salience,
- the worker's prior over attributes and their noise, coarse, category and
  merge propensities,

and averaging over the HIT's own random draws (the attribute used, the
noise kind, the granularity, crossing, category grain and merged pairs,
random groups and slips), P(same) is the best any predictor can do that
does not see the HIT's labels: a model of the crowd is at best this good,
and the gap to it is what is left to learn. Accuracy and NLL of this
reference bound the held-out scores of every method in the benchmarks,
and its calibration checks the simulator and the scoring together.

It is computed by Monte Carlo: each requested HIT is re-answered
``n_draws`` times with ``cen_bayes.datasets.answer_hits``, the very
function that answered it in the simulation, and the same-group indicator
of each pair is averaged. Work is vectorised over HITs and draws (draws in
batches sized to bound memory).

**Noise.** The simulator makes exactly round(noise_rate * n_HITs) HITs noisy,
allocated by weighted sampling without replacement with weights = the
worker's noise propensity. Given the propensities, a HIT's noise is then
Bernoulli with the allocation's inclusion probability (the other HITs'
noise is not observed, so only this marginal matters for a pair). We draw
it by re-running the allocation over all the dataset's HITs in each draw:
numpy's weighted choice without replacement is successive sampling, which
is the same as order sampling with exponential clocks (the n HITs with the
smallest Exp(1) / weight are noisy), so the marginal is exactly the
inclusion probability, with no approximation beyond Monte Carlo.

**Finite NLL.** The Monte Carlo average of n draws is a multiple of 1/n;
an estimate of 0 or 1 only says that the true value is below about 1/n (or
above 1 - 1/n). We clip to [1/(2n), 1 - 1/(2n)], half a step of the Monte
Carlo grid, so a pair the process almost never labels "same" costs a large
but finite log loss, as it would under the true small probability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cen_bayes.crowd import CrowdData, Pairs
from cen_bayes.datasets import SimulatedDataset, answer_hits, world_of

# Budget of array cells (pairs x draws, or HIT images x draws) per batch of draws:
# a few tens of MB of temporaries at most.
_CELLS_PER_BATCH = 4_000_000


def bayes_limit(sim: SimulatedDataset, data: CrowdData, pairs: Pairs, n_draws: int = 2000,
                seed: int = 0) -> np.ndarray:
    """P(same) of each pair under the true process, given everything fixed before its HIT is
    answered (float64, clipped to [1/(2 n_draws), 1 - 1/(2 n_draws)]; see the module docstring).

    ``data`` must index ``sim.table`` (or a subset of its HITs); ``pairs`` are
    pairs of ``data`` (e.g. the held-out ones). Same seed, same answer.
    """
    if n_draws < 1:
        raise ValueError("n_draws must be >= 1")
    world, all_worker, all_grid = world_of(sim)
    spec, S = sim.spec, world.grid_images.shape[1]
    # the requested pairs' HITs, as rows of sim.hits
    sim_keys = pd.MultiIndex.from_arrays([sim.hits.worker_id.astype(str), sim.hits.grid_id.astype(str)])
    data_keys = pd.MultiIndex.from_arrays([data.hits.worker_id.astype(str), data.hits.grid_id.astype(str)])
    sim_row = sim_keys.get_indexer(data_keys)
    hit_codes, pair_hit = np.unique(pairs.hit.cpu().numpy(), return_inverse=True)
    rows = sim_row[hit_codes]
    if (rows < 0).any():
        raise ValueError(f"{int((rows < 0).sum())} HITs of the pairs are not in the simulation {sim.name!r}")
    # each pair's images as positions in its HIT's grid row
    image_of = pd.Index(sim.image_attributes.index.astype(str)).get_indexer(np.asarray(data.images, dtype=str))
    shown = world.grid_images[all_grid[rows]]  # (R, S)
    keys = (np.arange(len(rows))[:, None] * len(sim.image_attributes) + shown).ravel()
    order = np.argsort(keys)
    pos = []
    for image in (pairs.i, pairs.j):
        wanted = pair_hit * len(sim.image_attributes) + image_of[image.cpu().numpy()]
        found = order[np.minimum(np.searchsorted(keys, wanted, sorter=order), len(keys) - 1)]
        if (image_of < 0).any() or (keys[found] != wanted).any():
            raise ValueError("some pairs' images are not in their HIT's grid in the simulation")
        pos.append(found)  # flat index into (R, S)
    pos_i, pos_j = pos

    # the noise allocation of the whole dataset (order sampling with exponential clocks)
    n_all = len(all_worker)
    n_noisy = int(round(spec.noise_rate * n_all))
    weight = sim.propensities["noise"].to_numpy(dtype=float)[all_worker] if n_noisy else None
    coarse_p = sim.propensities["coarse"].to_numpy(dtype=float)

    rng = np.random.default_rng(seed)
    R = len(rows)
    batch = int(max(1, min(n_draws, _CELLS_PER_BATCH // max(len(pos_i), R * S, n_all))))
    same = np.zeros(len(pos_i), dtype=np.int64)
    done = 0
    while done < n_draws:
        b = min(batch, n_draws - done)
        if n_noisy:
            clocks = rng.exponential(size=(b, n_all)) / weight
            threshold = np.partition(clocks, n_noisy - 1, axis=1)[:, n_noisy - 1]
            noisy = (clocks[:, rows] <= threshold[:, None]).ravel()
        else:
            noisy = np.zeros(b * R, dtype=bool)
        answer = answer_hits(world, rng, np.tile(all_worker[rows], b), np.tile(all_grid[rows], b),
                             noisy=noisy, coarse_p=coarse_p)
        labels = answer.labels.astype(np.int8).reshape(b, R * S)
        same += (labels[:, pos_i] == labels[:, pos_j]).sum(axis=0)
        done += b
    half_step = 0.5 / n_draws
    return np.clip(same / n_draws, half_step, 1.0 - half_step)
