"""Index a validated annotation table and expand it into pairwise labels.

Models see integer codes and tensors; users see their own ids. ``CrowdData``
keeps both: ``workers``, ``grids``, ``images`` map codes back to the original
ids, and ``hits`` lists every (worker, grid) HIT. Each HIT of S images gives
(S^2 - S)/2 labelled pairs (paper eq. 1); the expansion is done with array
arithmetic so 820k pairs take a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

from cen_bayes.annotations import read_annotations


class ParallelTensors:
    """A dataclass of equal-length 1-D tensors, one entry per item, selected and moved together
    (what the shared training loop batches: ``Pairs`` here, ``models.baselines.triplet_sampling.Triplets``)."""

    def __len__(self) -> int:
        return getattr(self, fields(self)[0].name).shape[0]

    def subset(self, index):
        """The items selected by a boolean mask, an index tensor or a slice."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device):
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class Pairs(ParallelTensors):
    """Pairwise labels as parallel 1-D tensors, one entry per pair (w, g, i, j, l)."""

    worker: torch.Tensor  # int64 worker code
    grid: torch.Tensor  # int64 grid code
    hit: torch.Tensor  # int64 HIT code (row of CrowdData.hits)
    i: torch.Tensor  # int64 image code, first image of the pair
    j: torch.Tensor  # int64 image code, second image
    label: torch.Tensor  # float32, 1.0 when the worker put i and j in one group


@dataclass
class CrowdData:
    """An annotation table, its integer codes, its pairs and each grid's image set."""

    table: pd.DataFrame  # validated input, plus integer columns worker, grid, image, hit
    workers: pd.Index  # code -> original worker_id
    grids: pd.Index  # code -> original grid_id
    images: pd.Index  # code -> original image_id
    hits: pd.DataFrame  # one row per HIT: worker_id, grid_id, worker, grid, n_images
    pairs: Pairs
    grid_ptr: torch.Tensor  # CSR offsets, length n_grids + 1, into grid_image
    grid_image: torch.Tensor  # image codes of every grid's image set, grid by grid

    @property
    def n_workers(self) -> int:
        return len(self.workers)

    @property
    def n_grids(self) -> int:
        return len(self.grids)

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def n_hits(self) -> int:
        return len(self.hits)

    @classmethod
    def from_source(cls, source, name: str | None = None) -> "CrowdData":
        """Read (CSV, Parquet or DataFrame), validate, index and expand."""
        return cls.from_table(read_annotations(source, name))

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> "CrowdData":
        """Index an already validated table (see ``read_annotations``)."""
        table = table.copy()
        worker, workers = pd.factorize(table["worker_id"])
        grid, grids = pd.factorize(table["grid_id"])
        image, images = pd.factorize(table["image_id"])
        hit, hit_keys = pd.factorize(worker.astype(np.int64) * len(grids) + grid)
        table["worker"], table["grid"], table["image"], table["hit"] = worker, grid, image, hit
        hit_worker, hit_grid = np.divmod(hit_keys, len(grids))
        hits = pd.DataFrame(
            {
                "worker_id": workers[hit_worker],
                "grid_id": grids[hit_grid],
                "worker": hit_worker,
                "grid": hit_grid,
                "n_images": np.bincount(hit, minlength=len(hit_keys)),
            }
        )
        label, labels = pd.factorize(table["group"])
        group, _ = pd.factorize(hit.astype(np.int64) * len(labels) + label)  # group within its HIT
        pairs = expand_pairs(hit, image, group, hit_worker, hit_grid)
        grid_ptr, grid_image = grid_image_sets(grid, image, len(grids))
        return cls(table, pd.Index(workers, name="worker_id"), pd.Index(grids, name="grid_id"),
                   pd.Index(images, name="image_id"), hits, pairs, grid_ptr, grid_image)

    def grid_onehot(self) -> torch.Tensor:
        """Dense (n_grids, n_images) S-hot matrix of grid contents (paper §3.1.2 input)."""
        onehot = torch.zeros(self.n_grids, self.n_images)
        counts = self.grid_ptr.diff()
        rows = torch.repeat_interleave(torch.arange(self.n_grids), counts)
        onehot[rows, self.grid_image] = 1.0
        return onehot


def odd_hit_counts(data: CrowdData) -> dict:
    """HITs with every image in one group, and HITs with every image in a group of its own.

    Both are legitimate crowd behaviour (a lazy or a baffled worker, or a grid
    that really is all alike / all different), so they are kept for fitting;
    they are counted so a summary can say how much of the data they are. A
    two-image HIT is always one or the other. From the pairs: a HIT is one
    group when all its pairs say 'same', all alone when none does.
    """
    hit = data.pairs.hit.numpy()
    n_pairs = np.bincount(hit, minlength=data.n_hits)
    n_same = np.bincount(hit, weights=data.pairs.label.numpy(), minlength=data.n_hits)
    return {"n_one_group_hits": int((n_same == n_pairs).sum()), "n_all_singleton_hits": int((n_same == 0).sum())}


def expand_pairs(hit, image, group, hit_worker, hit_grid) -> Pairs:
    """All (S^2 - S)/2 within-HIT pairs of rows, vectorised.

    Rows are sorted by HIT; a row at position p of a HIT of size S pairs with
    the S - p - 1 rows after it, so the partner of the k-th repeat of row r is
    row r + 1 + k.
    """
    hit, image, group = (np.asarray(a) for a in (hit, image, group))
    order = np.argsort(hit, kind="stable")
    hit, image, group = hit[order], image[order], group[order]
    size = np.bincount(hit)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    position = np.arange(len(hit)) - start[hit]
    partners = size[hit] - position - 1
    first = np.repeat(np.arange(len(hit)), partners)
    block_start = np.repeat(np.cumsum(partners) - partners, partners)
    second = first + 1 + (np.arange(len(first)) - block_start)
    pair_hit = hit[first]
    as_long = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
    return Pairs(
        worker=as_long(np.asarray(hit_worker)[pair_hit]),
        grid=as_long(np.asarray(hit_grid)[pair_hit]),
        hit=as_long(pair_hit),
        i=as_long(image[first]),
        j=as_long(image[second]),
        label=torch.from_numpy((group[first] == group[second]).astype(np.float32)),
    )


def grid_image_sets(grid, image, n_grids: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR (offsets, image codes) of the union of images shown in each grid.

    A grid shown to several workers is one context; a worker who skipped an
    image does not change what the grid showed.
    """
    codes = np.unique(np.asarray(grid, dtype=np.int64) * (np.max(image) + 1) + np.asarray(image))
    grid_of, image_of = np.divmod(codes, np.max(image) + 1)
    ptr = np.concatenate([[0], np.cumsum(np.bincount(grid_of, minlength=n_grids))])
    return torch.from_numpy(ptr.astype(np.int64)), torch.from_numpy(image_of.astype(np.int64))
