"""Choose the next grids to show from a fitted Bayesian CEN (issue 22).

    python -m inference.design --run runs/retina --n 50 --out next_grids.csv
    python -m inference.design --run runs/retina --n 50 --worker w017 --out for_w017.csv
    python -m inference.design --run runs/retina --n 20 --strategy attribute --attribute 2 --out dim2.csv
    python -m inference.design --run runs/retina --n 50 --format toloka --out tasks.tsv

A CEN study is a loop: show grids, collect sortings, fit, choose what to
show next. This is the last step. ``--run`` is a folder of ``python -m
inference.svi`` (its ``model/``) or one ``CEN.save`` wrote. Strategies:

* ``info`` (default): the grids whose answer is expected to teach the model
  most, by BALD (Houlsby et al. 2011): the mutual information between a
  HIT's labels and the model's parameters θ, H[E_θ p] − E_θ H[p], from the
  fit's posterior draws. Each candidate is scored as a HIT by a new worker
  from the crowd (the model's population prior, as ``inference.predict``
  treats unseen workers) or by ``--worker`` (a trained worker, their own
  a^w). What a HIT leaves to chance given θ (a new worker's taste, a
  continuous variant's grid activation) is averaged inside each draw
  (``inference.predict.new_grid_probability_chunks``), so only uncertainty
  about θ counts as information.
  A grid's score is the **sum of its pairs' BALD**, an approximation: the
  labels of one HIT are conditionally independent given θ *and the HIT's
  own choice* (the attribute sorted by, or noise), not given θ alone, and
  pairs sharing an image inform the same embedding. The sum counts what
  pairs tell in common more than once, most on grids whose pairs are alike;
  the exact mutual information of a grid's 276 labels has no closed form,
  and its Monte Carlo estimate from S posterior draws cannot exceed log S
  nats (about 3.5 at 32 draws), below what one grid tells, so it could not
  rank grids at all. The sum ranks grids by how many uncertain pairs they
  hold, which is what the choice needs.
* ``random``: seeded uniformly random grids, the baseline (the paper's
  grids were random).
* ``attribute --attribute K``: the paper's §4.6, grids on which embedding
  dim K varies most and every other dim least (posterior-mean embedding:
  the sd along K minus the largest sd along another dim), so that workers
  sort them by K. Half its candidates are drawn near a random anchor image
  on the other dims (a pool of the 2·S nearest, S of them at random), as
  the simulator's focused grids are made: a uniform grid of 24 rarely holds
  images alike on every other dim, and the paper drew 10 million of them
  where we draw 10,000.

Candidates are ``--candidates`` (default 10,000) seeded random grids of
``--grid-size`` distinct images of the fitted table, scored in tensors a
chunk of grids at a time (no loop over pairs or candidates). ``info`` then
picks ``--n`` of them one at a time, each the grid with the most information
left given those picked before it: a grid's information is shared among its
images (half of each pair's to each of its two images) and an image's share
is divided by 1 + the number of picked grids that already show it
(``pick_informative`` says why), so a batch spreads over the uncertain
images instead of showing the few most uncertain ones in every grid.
``attribute`` takes the best first, skipping a grid that shares more than
half its images with one already taken.
A grid's id is ``grid-`` and 12 hex digits of its image set
(``cen_bayes.importers.image_set_grid_id``), the id a Toloka export
without task ids is given back on import.

``--format``: ``csv`` (default) writes ``grid_id,image_id``, one row per
image, what ``python -m cen_bayes.app serve --grids`` shows; ``toloka`` a
task upload TSV, one row per grid, column ``INPUT:images`` holding a JSON
list of image ids; ``mturk`` a batch input CSV, one row per grid, column
``images`` (MTurk hands it back as ``Input.images``). Either platform's
results then import with ``python -m inference.svi --data FILE --format
toloka|mturk`` (``cen_bayes.importers``).

Bad input (a folder that holds no fitted Bayesian CEN, an ``--attribute``
the model lacks, an ``--n`` above the candidates, an unknown ``--worker``)
stops with one line and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cen_bayes.api import RUN_MODEL, CEN
from cen_bayes.atomic import atomic_path, write_csv
from cen_bayes.importers import image_set_grid_id
from inference.predict import grid_pairs, new_grid_probabilities, trained_images, with_new_ids

STRATEGIES = ("info", "random", "attribute")
FORMATS = ("csv", "toloka", "mturk")
DEFAULT_OUT = {"csv": "next_grids.csv", "toloka": "next_grids.tsv", "mturk": "next_grids_mturk.csv"}
# posterior draws behind the info score: the fit keeps 100, and on 2,000 retina candidates the first 32 ranked
# them as all 100 did (Spearman 0.998, 96 of the top 100 shared, as between two seeds of 100 draws)
DESIGN_DRAWS = 32
INNER_DRAWS = 16  # draws of a new HIT's chance (a new worker's a^w, ...) inside each posterior draw
CANDIDATE_CELLS = 4_000_000  # candidates × images held at once while drawing candidates


class DesignError(ValueError):
    """A one-line, user-facing description of what is wrong with the request."""


@dataclass
class Design:
    """The chosen grids (image ids, one row per grid), their scores and how they were found."""

    grids: np.ndarray  # (n, S) image ids, object
    scores: np.ndarray  # (n,) the strategy's score of each grid (nan for random)
    strategy: str
    n_candidates: int
    candidate_scores: np.ndarray  # every candidate's score, what the chosen ones were picked from
    seconds: float  # drawing, scoring and picking the candidates

    @property
    def grid_ids(self) -> list[str]:
        return [image_set_grid_id([str(image) for image in images]) for images in self.grids]

    def table(self) -> pd.DataFrame:
        """``grid_id,image_id``, one row per image, grids in the order chosen (best first)."""
        ids = np.array(self.grid_ids, dtype=object)
        return pd.DataFrame({"grid_id": np.repeat(ids, self.grids.shape[1]), "image_id": self.grids.ravel()})


# ----- candidates -------------------------------------------------------------------------------
def uniform_grids(n_images: int, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, size) image codes: n grids of ``size`` distinct images, each set uniformly at random
    (the ``size`` largest of i.i.d. uniforms per row), drawn a block of rows at a time."""
    rows = max(1, CANDIDATE_CELLS // n_images)
    return torch.cat([torch.rand(min(rows, n - start), n_images, generator=generator).topk(size, -1).indices
                      for start in range(0, n, rows)]) if n else torch.zeros(0, size, dtype=torch.long)


def local_grids(embedding: torch.Tensor, n: int, size: int, dims: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """(n, size) image codes: each grid ``size`` random images of the 2·size nearest to a random anchor
    image along ``dims`` of ``embedding`` (the dims a focused grid keeps alike)."""
    n_images = len(embedding)
    pool = min(n_images, 2 * size)
    anchors = torch.randint(n_images, (n,), generator=generator)
    picks = torch.rand(n, pool, generator=generator).topk(size, -1).indices
    rows = max(1, CANDIDATE_CELLS // n_images)
    near = torch.cat([torch.cdist(embedding[anchors[start: start + rows]][:, dims], embedding[:, dims])
                      .topk(pool, -1, largest=False).indices for start in range(0, n, rows)])
    return near.gather(1, picks)


# ----- scores ------------------------------------------------------------------------------------
def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """H of a Bernoulli(p) in nats, 0 at p = 0 and 1."""
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1.0 - p, 1.0 - p))


def information_gain(cen: CEN, grids: torch.Tensor, worker: int | None = None, draws: int = DESIGN_DRAWS,
                     seed: int = 0, inner_draws: int = INNER_DRAWS) -> np.ndarray:
    """(grids,) float64: each grid's expected information about the model from one HIT of it, the sum
    over its pairs of H[E_θ p] − E_θ H[p] (the module docstring says why a sum), in nats
    (``information_shares``, summed over the grid's images)."""
    return information_shares(cen, grids, worker, draws, seed, inner_draws).sum(1)


def information_shares(cen: CEN, grids: torch.Tensor, worker: int | None = None, draws: int = DESIGN_DRAWS,
                       seed: int = 0, inner_draws: int = INNER_DRAWS) -> np.ndarray:
    """(grids, S) float64: each grid's expected information (``information_gain``) shared among its
    images, each pair's BALD half to each of its two images; what the greedy choice discounts for
    images shown again (``pick_informative``).

    ``grids`` (n, S) holds image codes of the fitted data, or codes past them for images the fit never
    saw: in each posterior draw those take the embedding of a random trained image, as prediction gives
    a new image. ``worker``: the code of a worker with a training HIT; None: a new worker from the crowd.
    """
    if cen.map_mode:
        raise DesignError("a MAP fit is one point, with no posterior spread to learn about; use --strategy "
                          "random or attribute, or fit by SVI (without --map)")
    model = cen.model_
    posterior = cen.draws_[:draws]
    n_new = int(grids.max()) + 1 - cen.data_.n_images if grids.numel() else 0
    if n_new > 0:
        torch.manual_seed(seed)  # with_new_ids draws from torch's generator
        pool = torch.nonzero(trained_images(model)).squeeze(-1)
        no_grids = torch.zeros(0, dtype=torch.long, device=pool.device)
        posterior = [with_new_ids(model, draw, n_new, 0, 0, pool, no_grids, False) for draw in posterior]
    first, second = grid_pairs(grids.shape[1], model.label.device)
    shares = np.zeros(tuple(grids.shape))
    mean = entropy = None  # running sums over draws of P(same) and of its entropy, for the chunk at hand
    for start, row, p in new_grid_probabilities(model, posterior, grids, worker, inner_draws, seed,
                                                cen.threshold_scale_):
        if row == 0:
            mean, entropy = torch.zeros_like(p), torch.zeros_like(p)
        mean += p
        entropy += binary_entropy(p)
        if row == len(posterior) - 1:  # the chunk's last draw: H[E_θ p] − E_θ H[p] per pair
            half = (binary_entropy(mean / len(posterior)) - entropy / len(posterior)).clamp(min=0.0).double() / 2
            chunk = half.new_zeros(len(p), grids.shape[1]).index_add_(1, first, half).index_add_(1, second, half)
            shares[start: start + len(p)] = chunk.cpu().numpy()
    return shares


def attribute_focus(embedding: torch.Tensor, grids: torch.Tensor, attribute: int) -> np.ndarray:
    """(grids,) how much more a grid spreads along dim ``attribute`` than along any other: the sd of its
    images' (posterior-mean) coordinates on that dim minus the largest sd on another dim."""
    sd = embedding[grids].std(-2, unbiased=False)  # (grids, K)
    others = torch.cat([sd[:, :attribute], sd[:, attribute + 1:]], 1)
    rival = others.max(1).values if others.shape[1] else torch.zeros(len(sd), dtype=sd.dtype)
    return (sd[:, attribute] - rival).double().cpu().numpy()


# ----- choosing ----------------------------------------------------------------------------------
def pick_informative(grids: torch.Tensor, shares: np.ndarray, n: int, n_images: int) -> np.ndarray:
    """Indices of ``n`` grids picked one at a time, each the one with the most information left given
    the grids picked before it: its images' shares (``information_shares``), each divided by 1 + the
    number of picked grids that already show the image.

    The expected information of a batch is not the sum of its grids' (their answers will overlap in
    what they tell), and the most uncertain images sit in many of the best candidates: on retina the
    plain top 50 of 10,000 show 8 images in 10 to 13 grids each, these picks one (and every one of the
    300 images at least once, against 284). A showing of an image tells less the more is known of it already: for a Gaussian embedding of
    precision τ that gains δ a showing, the k-th showing adds ½ log(1 + δ / (τ + (k − 1)δ)) nats,
    falling roughly as 1 / (1 + (k − 1)δ/τ). Dividing an image's share by 1 + (k − 1) takes δ = τ: a
    heuristic, not the batch's mutual information (BatchBALD), which the draws cannot estimate here
    (module docstring)."""
    shares = torch.as_tensor(shares)
    grids = grids.cpu()
    uses = torch.zeros(n_images, dtype=shares.dtype)
    free = torch.ones(len(grids), dtype=torch.bool)
    picked = []
    for _ in range(min(n, len(grids))):
        left = (shares / (1.0 + uses[grids])).sum(1).masked_fill(~free, -torch.inf)
        best = int(left.argmax())
        picked.append(best)
        free[best] = False
        uses[grids[best]] += 1
    return np.array(picked, dtype=np.int64)


def pick_apart(grids: torch.Tensor, scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` grids, best score first, skipping one that shares more than half its images with
    a grid already picked (a near duplicate); when none is left that passes, the best left."""
    size = grids.shape[1]
    order = torch.as_tensor(np.argsort(-scores, kind="stable"))
    grids = grids.cpu()[order]
    overlap = torch.zeros(len(grids), dtype=torch.long)  # most images shared with a picked grid
    free = torch.ones(len(grids), dtype=torch.bool)
    n_images = int(grids.max()) + 1
    picked = []
    for _ in range(min(n, len(grids))):
        passing = free & (overlap <= size // 2)
        best = int((passing if passing.any() else free).nonzero()[0])
        picked.append(best)
        free[best] = False
        shown = torch.zeros(n_images, dtype=torch.bool)
        shown[grids[best]] = True
        overlap = torch.maximum(overlap, shown[grids].sum(1))
    return order[picked].numpy()


def design(cen: CEN, n: int = 50, strategy: str = "info", *, grid_size: int = 24, candidates: int = 10_000,
           seed: int = 0, worker: str | None = None, attribute: int | None = None,
           draws: int = DESIGN_DRAWS) -> Design:
    """The next ``n`` grids to show, by ``strategy`` (module docstring), from a fitted ``CEN``."""
    check_request(cen, n, strategy, grid_size, candidates, worker, attribute)
    generator = torch.Generator().manual_seed(seed)
    n_images = cen.data_.n_images
    start = time.perf_counter()
    if strategy == "random":
        codes = distinct_grids(uniform_grids(n_images, 2 * n + 10, grid_size, generator))[:n]  # spares for repeats
        chosen, scores = np.arange(len(codes)), np.full(len(codes), np.nan)
    else:
        embedding = torch.as_tensor(cen.embedding_, dtype=torch.float32)
        if strategy == "attribute":
            others = torch.tensor([k for k in range(cen.K_) if k != attribute], dtype=torch.long)
            codes = distinct_grids(torch.cat([
                uniform_grids(n_images, candidates - candidates // 2, grid_size, generator),
                local_grids(embedding, candidates // 2, grid_size, others, generator)]))
            scores = attribute_focus(embedding, codes, attribute)
            chosen = pick_apart(codes, scores, n)
        else:
            codes = distinct_grids(uniform_grids(n_images, candidates, grid_size, generator))
            shares = information_shares(cen, codes, worker_code(cen, worker), draws, seed)
            scores = shares.sum(1)
            chosen = pick_informative(codes, shares, n, n_images)
    if len(chosen) < n:
        raise DesignError(f"--n {n}: only {len(chosen)} distinct grids of {grid_size} images turned up among the "
                          f"{n_images} images' candidates; ask for fewer or draw more --candidates")
    seconds = time.perf_counter() - start
    images = np.asarray(cen.data_.images, dtype=object)
    return Design(grids=images[codes[chosen].numpy()], scores=scores[chosen], strategy=strategy,
                  n_candidates=len(codes), candidate_scores=scores, seconds=seconds)


def distinct_grids(grids: torch.Tensor) -> torch.Tensor:
    """``grids`` without a grid whose image set an earlier one has (in any order), first ones kept: two
    chosen grids with one image set would share one id (``image_set_grid_id``)."""
    _, first = np.unique(np.sort(grids.numpy(), 1), axis=0, return_index=True)
    return grids[np.sort(first)]


def check_request(cen: CEN, n: int, strategy: str, grid_size: int, candidates: int, worker: str | None,
                  attribute: int | None) -> None:
    """One-line errors for a request the fitted model cannot answer."""
    if strategy not in STRATEGIES:
        raise DesignError(f"--strategy {strategy}: choose one of {', '.join(STRATEGIES)}")
    if n < 1:
        raise DesignError(f"--n {n}: ask for at least one grid")
    if not 2 <= grid_size <= cen.data_.n_images:
        raise DesignError(f"--grid-size {grid_size}: a grid needs 2 to {cen.data_.n_images} images "
                          f"(the fitted table has {cen.data_.n_images})")
    if strategy != "random" and n > candidates:
        raise DesignError(f"--n {n} is more than --candidates {candidates}; draw more candidates")
    if (attribute is not None) != (strategy == "attribute"):
        raise DesignError("--attribute K goes with --strategy attribute (and that strategy needs it)")
    if attribute is not None and not 0 <= attribute < cen.K_:
        raise DesignError(f"--attribute {attribute}: the model has dims 0 to {cen.K_ - 1} (K = {cen.K_})")
    if worker is not None and strategy != "info":
        raise DesignError(f"--worker scores grids for one worker's answer; --strategy {strategy} takes no worker")
    worker_code(cen, worker)


def worker_code(cen: CEN, worker: str | None) -> int | None:
    """The code of ``worker`` (an id of the fitted table with a training HIT), or None for None;
    ``DesignError`` for any other id."""
    if worker is None:
        return None
    if not cen.model_.uses_worker:
        raise DesignError(f"--worker: the {cen.variant_} variant has no worker activations")
    code = trained_worker(cen, worker)
    if code is None:
        known = str(worker) in set(np.asarray(cen.data_.workers, dtype=str))
        raise DesignError(f"--worker {worker}: " + ("no training HIT, so the fit learned nothing of their taste"
                                                     if known else "no such worker in the fitted table")
                          + "; leave --worker out to design for a new worker from the crowd")
    return code


def trained_worker(cen: CEN, worker: str) -> int | None:
    """The code of ``worker`` if the fit learned their a^w (a worker with a training HIT), else None."""
    if not cen.model_.uses_worker:
        return None
    code = int(pd.Index(np.asarray(cen.data_.workers, dtype=str)).get_indexer([str(worker)])[0])
    return code if code >= 0 and bool((cen.model_.hit_worker == code).any()) else None


def grid_information(cen: CEN, grids: dict[str, tuple[str, ...]], worker: int | None = None,
                     draws: int = DESIGN_DRAWS, seed: int = 0) -> dict[str, float]:
    """``information_gain`` of given grids (grid id -> image ids, any sizes), by grid id: what the
    collection app ranks its grids file by. An image the fit never saw is a new image
    (``information_gain``); ``worker``: a code from ``trained_worker``, None for a new worker."""
    known = pd.Index(np.asarray(cen.data_.images, dtype=str))
    ids = list(grids)
    flat = np.concatenate([np.asarray(grids[g], dtype=str) for g in ids]) if ids else np.zeros(0, dtype=str)
    codes = known.get_indexer(flat)
    new = codes < 0
    codes[new] = cen.data_.n_images + pd.factorize(flat[new])[0]
    bounds = np.cumsum([0] + [len(grids[g]) for g in ids])
    rows = [codes[bounds[k]: bounds[k + 1]] for k in range(len(ids))]
    scores = {}
    for size in sorted({len(row) for row in rows}):  # one tensor per grid size
        same = [k for k, row in enumerate(rows) if len(row) == size]
        gain = information_gain(cen, torch.as_tensor(np.stack([rows[k] for k in same])), worker, draws, seed)
        scores.update({ids[k]: float(value) for k, value in zip(same, gain)})
    return scores


# ----- reading a run, writing the grids ------------------------------------------------------------
def load_run(path, device: str = "cpu") -> CEN:
    """The fitted Bayesian CEN of a ``python -m inference.svi`` run folder (its ``model/``) or of a
    ``CEN.save`` folder; ``DesignError`` (one line) for anything else."""
    path = Path(path)
    if not path.exists():
        raise DesignError(f"--run {path}: no such folder")
    if not path.is_dir():
        raise DesignError(f"--run {path}: not a folder (give a run folder of python -m inference.svi or a "
                          "folder written by CEN.save)")
    for folder in (path, path / RUN_MODEL):
        if CEN.is_saved(folder):
            return CEN.load(folder, device=device)
    run = path / "run.json"
    if run.is_file():
        method = json.loads(run.read_text()).get("method", "cen")
        if method != "cen":
            raise DesignError(f"--run {path}: a run of --method {method}, which has no posterior to design from; "
                              "fit the Bayesian CEN (--method cen)")
        raise DesignError(f"--run {path}: no fitted model in it ({RUN_MODEL}/ is missing: the fit was stopped, or "
                          "made before python -m inference.svi saved it); finish or redo the fit")
    raise DesignError(f"--run {path}: not a fit (expected {RUN_MODEL}/ of a python -m inference.svi run, or the "
                      "settings.json, model.pt and annotations.parquet CEN.save writes)")


def write_design(result: Design, path, format: str = "csv") -> Path:
    """``result`` as ``format`` (module docstring) at ``path``, whole or not at all."""
    path = Path(path)
    if format == "csv":
        return write_csv(result.table(), path)
    lists = [json.dumps([str(image) for image in images], ensure_ascii=False) for images in result.grids]
    if format == "toloka":  # TSV as Toloka reads it: the JSON as it is, one task a line (json escapes tabs)
        with atomic_path(path) as partial:
            partial.write_text("INPUT:images\n" + "".join(f"{cell}\n" for cell in lists), encoding="utf-8")
        return path
    if format == "mturk":
        return write_csv(pd.DataFrame({"images": lists}), path)
    raise DesignError(f"--format {format}: choose one of {', '.join(FORMATS)}")


# ----- the command line ------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 1, like every other bad input
        self.exit(1, f"error: {message} (see {self.prog} --help)\n")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = _Parser(prog="python -m inference.design", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a run folder of python -m inference.svi, or a CEN.save folder")
    parser.add_argument("--n", type=_int, default=50, help="grids to choose (default 50)")
    parser.add_argument("--out", help="file to write (default next_grids.csv; .tsv for toloka)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="info",
                        help="info (default): expected information gain; random; attribute (needs --attribute)")
    parser.add_argument("--attribute", type=_int, help="the embedding dim --strategy attribute spreads")
    parser.add_argument("--worker", help="info: design for this trained worker (default: a new worker from the crowd)")
    parser.add_argument("--grid-size", type=_int, default=24, help="images per grid (default 24, the paper's 4 × 6)")
    parser.add_argument("--candidates", type=_int, default=10_000, help="random grids scored (default 10,000)")
    parser.add_argument("--draws", type=_int, default=DESIGN_DRAWS,
                        help=f"posterior draws behind the info score (default {DESIGN_DRAWS}; at most the fit's)")
    parser.add_argument("--format", choices=FORMATS, default="csv",
                        help="csv: grid_id,image_id (default); toloka: task TSV; mturk: batch input CSV")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    for name in ("candidates", "draws"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def describe(result: Design, worker: str | None, attribute: int | None) -> str:
    """What was chosen, by what, and how it compares with the candidates."""
    n, size = result.grids.shape
    if result.strategy == "random":
        return f"chose {n} random grids of {size} images"
    whom = {"info": f" for worker {worker}" if worker else " for a new worker from the crowd",
            "attribute": f" spreading dim {attribute}"}[result.strategy]
    unit = "nats of expected information" if result.strategy == "info" else "sd along the dim over the largest other"
    shown = pd.Series(result.grids.ravel()).value_counts()
    return (f"chose {n} grids of {size} images by {result.strategy}{whom} from {result.n_candidates:,} candidates "
            f"in {result.seconds:.1f} s: {unit} {result.scores.min():.3g} to {result.scores.max():.3g} per grid "
            f"(a candidate's median {np.median(result.candidate_scores):.3g}); {len(shown)} distinct images, "
            f"none in more than {shown.max()} grids")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    out = Path(args.out or DEFAULT_OUT[args.format])
    try:
        cen = load_run(args.run, args.device)
        result = design(cen, args.n, args.strategy, grid_size=args.grid_size, candidates=args.candidates,
                        seed=args.seed, worker=args.worker, attribute=args.attribute, draws=args.draws)
        write_design(result, out, args.format)
    except DesignError as err:
        raise SystemExit(f"error: {err}") from None
    except OSError as err:  # an unreadable run or an unwritable --out: the user's to fix, in one line
        raise SystemExit(f"error: {' '.join(str(err).split())}") from None
    print(describe(result, args.worker, args.attribute))
    print(f"wrote {out} ({args.format})")


if __name__ == "__main__":
    main()
