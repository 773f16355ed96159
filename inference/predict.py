"""Posterior summaries and predictions of a fitted Bayesian CEN.

Everything here averages over draws from the guide: a held-out pair's
P(same) is the posterior predictive mean, a HIT's attribute probabilities
are posterior probabilities. A grid with no training HIT gets its activation
from the prior given its contents (the context network), which is what makes
predictions for unseen grids possible. An image no training HIT showed takes,
in each draw, the embedding of a random image that one did
(``new_image_embeddings``). Likewise a worker with no training HIT
(grids are held out whole, so a worker can appear in test HITs only) gets
its activation a^w from the population prior: the guide's
factor for such a worker sees no data, only the prior, and a short fit leaves
it near its narrow starting value instead of the prior's spread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer.autoguide import AutoDelta
from tqdm.auto import tqdm

from cen_bayes.crowd import CrowdData, Pairs
from models.cen import BayesianCEN
from models.cen.sparse import csr_rows
from models.cen.hit_pairs import HitPairs
from models.energy import fit_threshold_scale, paper_pair_loss, weighted_distance, weighted_norm


# The model's latent sample sites, named as ``Draw``'s fields.
LATENT_SITES = ("x", "a_w", "a_g", "beta", "eps", "tau", "rho", "alpha")


@dataclass
class Draw:
    """One joint posterior draw of everything a prediction needs."""

    x: torch.Tensor
    a_w: torch.Tensor | None
    a_g: torch.Tensor | None
    beta: torch.Tensor | None
    eps: torch.Tensor | None
    tau: torch.Tensor | None = None
    rho: torch.Tensor | None = None  # the kind variant's share of sorts by overall kind
    alpha: torch.Tensor | None = None  # the crowd level (models.cen): how alike workers' biases are


@torch.no_grad()
def posterior_draws(model: BayesianCEN, guide, n_draws: int, seen_grids: torch.Tensor, seed: int = 0) -> list[Draw]:
    """Draws from the guide; unseen grids' a^g re-drawn from the context prior, unseen workers'
    a^w and ε from the population prior (``unseen_worker_prior``)."""
    pyro.set_rng_seed(seed)
    seen_workers = torch.zeros(model.n_workers, dtype=torch.bool, device=model.hit_worker.device)
    seen_workers[model.hit_worker] = True
    seen_images = trained_images(model)
    point = isinstance(guide, AutoDelta)
    draws = []
    for _ in range(n_draws):
        latent = guide()
        if not bool(seen_workers.all()):
            latent = unseen_worker_prior(model, latent, seen_workers, point=point)
        x = latent["x"] if point or bool(seen_images.all()) else new_image_embeddings(latent["x"], seen_images)
        a_g = None
        if model.uses_context:  # the model's own grid activations given x and τ: a prior draw where latent
            with poutine.block():
                a_g = model.priors.grid_activations(model, x, latent.get("tau"))
            if "a_g" in latent:  # a latent per grid: the guide's for grids with a training HIT
                a_g = torch.where(seen_grids.unsqueeze(-1), latent["a_g"], a_g)
        draws.append(Draw(x=x, a_w=latent.get("a_w"), a_g=a_g, beta=latent.get("beta"), eps=latent.get("eps"),
                          tau=latent.get("tau"), rho=latent.get("rho"), alpha=latent.get("alpha")))
    return draws


def trained_images(model: BayesianCEN) -> torch.Tensor:
    """Bool per image: some training pair holds it, so its embedding was learned from labels."""
    seen = torch.zeros(model.n_images, dtype=torch.bool, device=model.pair_i.device)
    seen[model.pair_i] = True
    seen[model.pair_j] = True
    return seen


def new_image_embeddings(x: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """``x`` with each image no training HIT showed given the embedding of a random seen image.

    Such an image's guide factor saw only the prior, and the fitted embedding
    of the crowd's images is not that prior (it is clustered by kind, its
    spread set by the margins), so the prior's draw scores its pairs as with
    a random point: measured on the real ImageNet crowd, the context and
    worker variants then called "same" far too often on these pairs. A seen
    image drawn afresh in every posterior draw makes the averaged P(same) the
    posterior predictive for a new image from the same collection: the
    crowd's base rate for that kind of HIT, given the other image.
    """
    pool = torch.nonzero(seen).squeeze(-1)
    pick = pool[torch.randint(len(pool), (x.shape[0],), device=x.device)]
    return torch.where(seen.unsqueeze(-1), x, x[pick])


def unseen_worker_prior(model: BayesianCEN, latent: dict, seen_workers: torch.Tensor, point: bool) -> dict:
    """``latent`` with the a^w of workers that have no training HIT taken from the population.

    What such a worker gets is the model's priors' to say (``new_worker_activations`` of
    ``models.cen.priors``): under the crowd priors a draw from the crowd level τ (and α), the
    posterior predictive for a new worker, or its mean for a MAP point (``point``); under the
    paper's nearly flat penalty, the training workers' mean. The noise share ε is the crowd's,
    so a new worker has it too.
    """
    latent = dict(latent)
    if latent.get("a_w") is not None:
        a_w = latent["a_w"]
        population = model.priors.new_worker_activations(model, a_w, seen_workers, latent.get("tau"),
                                                         latent.get("alpha"), point)
        latent["a_w"] = torch.where(seen_workers.unsqueeze(-1), a_w, population)
    return latent


def hit_index(pairs: Pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct HIT codes of these pairs, each pair's position among them)."""
    hits, local = torch.unique(pairs.hit, return_inverse=True)
    return hits, local


PAIR_CHUNK = 100_000  # pairs scored at once: prediction's memory follows draws × chunk, not draws × pairs
HIT_CHUNK_PAIRS = 250_000  # about this many pairs of whole HITs scored at once for the attribute probabilities


@torch.no_grad()
def pair_probability_chunks(model: BayesianCEN, draws: list[Draw], data: CrowdData, pairs: Pairs,
                            threshold_scale: float | None = None, *, trained_grids: torch.Tensor | None = None,
                            point: bool = False, seed: int = 0, progress: bool = False):
    """(draws, chunk) P(same group) under each posterior draw, float64, for ``PAIR_CHUNK`` pairs at a time;
    the posterior predictive is their mean over draws.

    ``pairs`` may name images, workers and grids beyond ``data``'s (codes past
    its own, as ``cen_bayes.api`` makes them): in each draw (seeded by
    ``seed``) a new image takes a random trained image's embedding (as
    ``new_image_embeddings`` does for untrained ones), a new worker an a^w
    from the population (``unseen_worker_prior``; ``point`` for a MAP fit)
    and a new grid the activation of a random grid of ``trained_grids``:
    averaged over the draws, the posterior predictive for a pair from the
    same collection. The new ids are drawn once for all chunks.
    """
    device = model.label.device
    pairs = pairs.to(device)
    hits, local = hit_index(pairs)
    hit_worker = torch.zeros(len(hits), dtype=torch.long, device=device).scatter_(0, local, pairs.worker)
    hit_grid = torch.zeros(len(hits), dtype=torch.long, device=device).scatter_(0, local, pairs.grid)
    new = [max(int(codes.max()) + 1 - known, 0) if len(pairs) else 0 for codes, known in (
        (torch.maximum(pairs.i, pairs.j), data.n_images), (pairs.worker, data.n_workers), (pairs.grid, data.n_grids))]
    if any(new):
        pyro.set_rng_seed(seed)
        pools = torch.nonzero(trained_images(model)).squeeze(-1), torch.nonzero(trained_grids).squeeze(-1)
        draws = [with_new_ids(model, draw, *new, *pools, point) for draw in draws]
    starts = range(0, len(pairs), PAIR_CHUNK)
    for start in tqdm(starts, desc="predicting pairs", disable=not progress or len(starts) < 2, leave=False):
        chunk, chunk_local = pairs.subset(slice(start, start + PAIR_CHUNK)), local[start: start + PAIR_CHUNK]
        yield torch.stack([model.pair_same_probability(draw.x, draw.a_w, draw.a_g, draw.beta, draw.rho, draw.eps,
                                                       chunk, chunk_local, hit_worker, hit_grid,
                                                       threshold_scale).double() for draw in draws])


def pair_probability_draws(model: BayesianCEN, draws: list[Draw], data: CrowdData, pairs: Pairs,
                           threshold_scale: float | None = None, **options) -> np.ndarray:
    """(draws, pairs) P(same) under each posterior draw (``pair_probability_chunks``, its options)."""
    chunks = [c.cpu() for c in pair_probability_chunks(model, draws, data, pairs, threshold_scale, **options)]
    return torch.cat(chunks, 1).numpy() if chunks else np.zeros((len(draws), 0))


def pair_probability(model: BayesianCEN, draws: list[Draw], data: CrowdData, pairs: Pairs,
                     threshold_scale: float | None = None, **options) -> np.ndarray:
    """(pairs,) the posterior predictive P(same), the mean over draws, never holding every draw of every
    pair (``pair_probability_chunks``, its options)."""
    means = [c.mean(0).cpu() for c in pair_probability_chunks(model, draws, data, pairs, threshold_scale, **options)]
    return torch.cat(means).numpy() if means else np.zeros(0)


def with_new_ids(model: BayesianCEN, draw: Draw, n_images: int, n_workers: int, n_grids: int,
                 image_pool: torch.Tensor, grid_pool: torch.Tensor, point: bool) -> Draw:
    """``draw`` with rows appended for new images (a random image of ``image_pool``), workers (the
    population prior) and grids (a random grid of ``grid_pool``): ``pair_probability_chunks``."""
    device = draw.x.device
    x = torch.cat([draw.x, draw.x[image_pool[torch.randint(len(image_pool), (n_images,), device=device)]]])
    a_w, a_g = draw.a_w, draw.a_g
    if a_w is not None and n_workers:
        known = torch.cat([torch.ones(len(a_w), dtype=torch.bool, device=device),
                           torch.zeros(n_workers, dtype=torch.bool, device=device)])
        latent = {"a_w": torch.cat([a_w, a_w.new_zeros(n_workers, a_w.shape[-1])]), "tau": draw.tau,
                  "alpha": draw.alpha}
        a_w = unseen_worker_prior(model, latent, known, point)["a_w"]
    if a_g is not None and n_grids:
        a_g = torch.cat([a_g, a_g[grid_pool[torch.randint(len(grid_pool), (n_grids,), device=device)]]])
    return replace(draw, x=x, a_w=a_w, a_g=a_g)


GRID_CELLS = 8_000_000  # pair × dim values of new grids held at once: the memory of scoring candidates


def grid_pairs(grid_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (first, second) in a grid of ``grid_size`` images of each of its (S² − S)/2 pairs."""
    first, second = torch.triu_indices(grid_size, grid_size, 1, device=device)
    return first, second


@torch.no_grad()
def new_grid_probabilities(model: BayesianCEN, draws: list[Draw], grids: torch.Tensor, worker: int | None = None,
                           inner_draws: int = 16, seed: int = 0, threshold_scale: float | None = None,
                           cells: int = GRID_CELLS):
    """P(same) of every pair of new grids under each posterior draw, a chunk of grids at a time:
    yields (first grid of the chunk, draw index, (chunk, pairs) float32), every draw of a chunk before
    the next chunk, pairs at the positions of ``grid_pairs``.

    ``grids`` (new grids, S) holds image codes of the fitted data; each grid is
    scored as one HIT that nobody has answered yet, by ``worker`` (the code of a
    worker with a training HIT) or, when None, by a new worker from the crowd.
    Given a posterior draw θ, such a HIT still leaves to chance its worker's
    a^w (a new worker's: the population prior, ``unseen_worker_prior``) and,
    in the continuous variants, the new grid's a^g (its context prior given
    its images, ``new_grid_activations`` of the model's priors). Those are
    averaged over ``inner_draws`` draws within each posterior draw, so each
    yielded row is P(same | θ) for the HIT, and what varies across draws is
    uncertainty about θ alone: a new worker's taste is the HIT's chance, not
    something its labels teach about the model (``inference.design`` scores
    exactly that spread). The choice variants average the HIT's choice
    probabilities, which is exact since P(same) is linear in them; ``kind``'s
    overall sort then weighs the dims by the averaged π, an approximation (its
    distance is not linear in π). The continuous variants average P(same)
    itself, one inner draw at a time. A new worker's inner draws are drawn
    once (seeded by ``seed``), so every chunk sees the same workers.

    Random grids of a collection share most of their pairs (10,000 grids of
    24 of 300 images hold 2.76 M pairs, of 45,000 distinct ones), so each
    chunk's distinct pairs are found once, and what depends on a pair alone
    (its difference, its P(same) on each dim) is computed once per draw for
    each of them and gathered into the grids; only what depends on the grid
    (its choice prior, ``kind``'s overall distance, a continuous variant's
    activations) is computed per grid.
    """
    device = model.label.device
    grids = torch.as_tensor(grids, device=device)
    first, second = grid_pairs(grids.shape[1], device)
    chunk = max(1, cells // (len(first) * model.K))
    pyro.set_rng_seed(seed)
    chance_in_hit = (worker is None and model.uses_worker) or (model.uses_context and not model.sums_out_choice)
    inner = inner_draws if chance_in_hit else 1
    workers = [hit_worker_activations(model, draw, worker, inner) for draw in draws]
    n_codes = int(grids.max()) + 1 if grids.numel() else 1
    for start in range(0, len(grids), chunk):
        block = grids[start: start + chunk]
        i, j = block[:, first], block[:, second]
        distinct, where = torch.unique(torch.minimum(i, j) * n_codes + torch.maximum(i, j), return_inverse=True)
        distinct_i, distinct_j = distinct // n_codes, distinct % n_codes
        for row, (draw, a_w) in enumerate(zip(draws, workers)):
            diff = draw.x[distinct_i] - draw.x[distinct_j]  # (distinct pairs, K)
            a_g = (model.priors.new_grid_activations(model, draw.x, block, draw.tau, inner) if model.uses_context
                   else None)  # (inner, chunk, K)
            yield start, row, new_hit_same_probability(model, draw, diff, where, a_w, a_g, threshold_scale)


def new_grid_probability_draws(model: BayesianCEN, draws: list[Draw], grids: torch.Tensor, **options) -> torch.Tensor:
    """(draws, grids, pairs) every value ``new_grid_probabilities`` yields, in one tensor (small inputs)."""
    out = None
    for start, row, p in new_grid_probabilities(model, draws, grids, **options):
        if out is None:
            out = p.new_empty(len(draws), len(grids), p.shape[1])
        out[row, start: start + len(p)] = p
    return out


def hit_worker_activations(model: BayesianCEN, draw: Draw, worker: int | None, n: int) -> torch.Tensor | None:
    """(n, K) a^w of the worker of a new HIT in posterior draw ``draw``: ``worker``'s own (n copies), or,
    for None, n draws from the population (``unseen_worker_prior``); None for a variant without a^w."""
    if not model.uses_worker:
        return None
    if worker is not None:
        return draw.a_w[worker].expand(n, -1)
    latent = {"a_w": draw.a_w.new_zeros(n, draw.a_w.shape[-1]), "tau": draw.tau, "alpha": draw.alpha}
    unseen = torch.zeros(n, dtype=torch.bool, device=draw.a_w.device)
    return unseen_worker_prior(model, latent, unseen, point=False)["a_w"]


def spread_over(per_pair: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(grids, pairs, K) rows of ``per_pair`` (distinct pairs, K) at ``where`` (grids, pairs): ``index_select``,
    3× faster on CPU than indexing with a 2-D tensor (measured: 8 M values, 26 ms against 81)."""
    return per_pair.index_select(0, where.reshape(-1)).view(*where.shape, per_pair.shape[-1])


def new_hit_same_probability(model: BayesianCEN, draw: Draw, diff: torch.Tensor, where: torch.Tensor,
                             a_w: torch.Tensor | None, a_g: torch.Tensor | None,
                             threshold_scale: float | None = None) -> torch.Tensor:
    """(grids, pairs) P(same) of the pairs of new grids, each grid one new HIT: ``diff`` (distinct pairs, K)
    holds the image differences of the distinct pairs and ``where`` (grids, pairs) which of them each pair
    is; the HIT's worker and grid activations come as inner draws, a_w (n, K) and a_g (n, grids, K), and
    P(same) is averaged over them (``new_grid_probabilities``)."""
    n, n_grids = (len(a_w) if a_w is not None else len(a_g)), where.shape[0]
    if model.sums_out_choice:  # one prior per (inner draw, grid), averaged: P(same) is linear in it
        rows = torch.arange(n * n_grids, device=diff.device)
        a_w_rows, a_g_rows = a_w.repeat_interleave(n_grids, 0), a_g.reshape(n * n_grids, -1)
        choice = model.choice_log_prior(a_w_rows, a_g_rows, draw.rho, draw.eps, rows, rows).exp()
        choice = choice.view(n, n_grids, -1).mean(0).unsqueeze(1)  # (grids, 1, choices)
        overall = None
        if model.overall:
            weight = model.choice_weights(a_w_rows, a_g_rows, rows, rows).view(n, n_grids, -1).mean(0)
            overall = model.overall_same_probability(spread_over(diff, where), weight.unsqueeze(1), draw.beta)
        return model.mix_choices(choice, spread_over(model.dim_same_probability(diff, draw.beta), where), overall)
    diff, grid = spread_over(diff, where), torch.arange(n_grids, device=diff.device).unsqueeze(-1)
    total = torch.zeros(where.shape, dtype=diff.dtype, device=diff.device)
    for m in range(n):
        a = model.pair_activation(None if a_w is None else a_w[m: m + 1], None if a_g is None else a_g[m],
                                  torch.zeros_like(grid), grid)  # (grids, 1, K)
        total += model.priors.same_probability(model, weighted_norm(a, diff), draw.beta, threshold_scale)
    return total / n


@torch.no_grad()
def attribute_probability_draws(model: BayesianCEN, draws: list[Draw], data: CrowdData, train_hits: np.ndarray,
                                progress: bool = False) -> np.ndarray:
    """Per posterior draw and HIT (all HITs, data.hits order), P(attribute k was the one used).

    (draws, HITs, K [+ 2]), float32. choice: the posterior of z given the
    HIT's labels, columns 0..K-1, then 'overall' (``model.overall``), then 'noise'. Continuous variants: the
    indicator of argmax_k a_k, whose mean over draws is P(argmax_k a_k = k).

    ``train_hits``: the HITs ``model`` holds (a bool per HIT). Their pairs are
    scored through the model's own index; only the other HITs' pairs get a new
    one, so a campaign's pairs are never indexed twice (the index is the
    largest thing a fit holds). An index of up to ``HIT_CHUNK_PAIRS`` distinct
    image pairs scores each of them once for all its HITs (a crowd of a few
    hundred images repeats its pairs many times over); a larger one scores its
    HITs a chunk of about ``HIT_CHUNK_PAIRS`` pairs at a time: a whole
    campaign's pairs at once made temporaries of hundreds of MB per draw,
    which the allocator kept after freeing them, so memory rose draw after draw.
    """
    device = model.label.device
    train_hits = np.asarray(train_hits, dtype=bool)
    if model.n_train_hits != train_hits.sum():
        raise ValueError(f"the model holds {model.n_train_hits} training HITs, train_hits names {train_hits.sum()}")
    hit_worker = torch.tensor(data.hits["worker"].to_numpy(), device=device)
    hit_grid = torch.tensor(data.hits["grid"].to_numpy(), device=device)
    train_codes, other_codes = (torch.from_numpy(np.flatnonzero(h)).to(device) for h in (train_hits, ~train_hits))
    if model.sums_out_choice and len(other_codes):  # the other HITs' pairs, their HITs renumbered 0..
        other = data.pairs.subset(torch.from_numpy(~train_hits[data.pairs.hit.numpy()]))
        other_hit = torch.searchsorted(other_codes.cpu(), other.hit)
        other_index = HitPairs(other.i, other.j, other.label, other_hit, len(other_codes), data.n_images,
                               overall=model.overall).to(device)
    n_columns = model.K + 1 + model.overall if model.sums_out_choice else model.K
    out = torch.empty(len(draws), data.n_hits, n_columns)
    for d, draw in enumerate(tqdm(draws, desc="attribute probabilities", disable=not progress, leave=False)):
        if model.sums_out_choice:  # the log joint per HIT, a chunk of HITs at a time, softmax over its columns
            latents = draw.x, draw.a_w, draw.a_g, draw.beta, draw.rho, draw.eps
            for index, codes, worker, grid in ((model.hit_pairs, train_codes, model.hit_worker, model.hit_grid),
                                               *([(other_index, other_codes, hit_worker[other_codes],
                                                   hit_grid[other_codes])] if len(other_codes) else [])):
                if index.diff.n_rows <= HIT_CHUNK_PAIRS:  # few distinct pairs: each scored once for all HITs
                    out[d, codes.cpu()] = model.hit_log_joint(*latents, index, None, worker, grid).float().cpu()
                    continue
                for hits in hit_chunks(index.hit_ptr, HIT_CHUNK_PAIRS):
                    out[d, codes[hits].cpu()] = model.hit_log_joint(*latents, index, hits, worker[hits],
                                                                    grid[hits]).float().cpu()
            out[d] = torch.softmax(out[d], -1)
        else:
            a = model.pair_activation(draw.a_w, draw.a_g, hit_worker, hit_grid)
            out[d] = F.one_hot(a.argmax(-1), model.K).float().cpu()
    return out.numpy()


def hit_chunks(hit_ptr: torch.Tensor, max_pairs: int) -> tuple[torch.Tensor, ...]:
    """Consecutive HITs (their numbers) in chunks: those whose first pair falls in the same block of
    ``max_pairs`` pairs (``hit_ptr``: the CSR pointer of their pairs), so a chunk holds at most
    ``max_pairs`` pairs plus one HIT's."""
    block = torch.div(hit_ptr[:-1], max_pairs, rounding_mode="floor")
    sizes = torch.unique_consecutive(block, return_counts=True)[1]
    return torch.arange(len(block), device=hit_ptr.device).split(sizes.tolist())


@torch.no_grad()
def train_hit_log_likelihood(model: BayesianCEN, draws: list[Draw], hits: torch.Tensor | None = None,
                             progress: bool = False) -> np.ndarray:
    """(draws, training HITs) log P(labels of HIT h | draw), float64: the unit of ``az.loo``.

    The model itself is replayed: conditioned on each draw's latents, its
    ``labels`` site gives the likelihood it was fitted with. A HIT, not a pair,
    is the unit: in the choice variants its pairs share one summed-out z, so
    only the HIT's joint likelihood is defined (the site already holds one
    term per HIT); for the continuous variants a HIT's is the sum of its pairs'.
    ``hits``: training-HIT indices (the model's own numbering) to score, in that
    order; None scores them all. The model is called on them alone, so the
    work per draw follows the subsample, not the data.
    """
    if model.sums_out_choice:
        pair_row = None
    elif hits is None:
        pair_row = model.pair_hit
    else:  # the pairs the model scores for ``hits`` (its own csr_rows), each mapped to its HIT's row
        position = torch.full((model.n_train_hits,), -1, dtype=torch.long, device=hits.device)
        position[hits] = torch.arange(len(hits), device=hits.device)
        pair_row = position[model.pair_hit[csr_rows(model.hit_ptr, hits)[0]]]
    n_rows = model.n_train_hits if hits is None else len(hits)
    out = []
    for draw in tqdm(draws, desc="log-likelihood", disable=not progress, leave=False):
        latents = {name: getattr(draw, name) for name in LATENT_SITES if getattr(draw, name) is not None}
        site = poutine.trace(poutine.condition(model, data=latents)).get_trace(hits).nodes["labels"]
        log_lik = site["fn"].log_prob(site["value"]).double()
        if pair_row is not None:
            log_lik = torch.zeros(n_rows, dtype=torch.float64, device=log_lik.device).index_add_(0, pair_row, log_lik)
        out.append(log_lik)
    return torch.stack(out).cpu().numpy()


@torch.no_grad()
def paper_loss(model: BayesianCEN, draw: Draw) -> float:
    """Eq. 8 averaged over the training pairs at a MAP point: the number the paper's recipe minimises."""
    a = model.pair_activation(draw.a_w, draw.a_g, model.pair_worker, model.pair_grid)
    return paper_pair_loss(model.label, a, draw.x[model.pair_i], draw.x[model.pair_j], model.gamma, model.xi_p,
                           model.xi_n, model.priors.lambda1, model.priors.lambda2).mean().item()


@torch.no_grad()
def threshold_scale(model: BayesianCEN, draw: Draw) -> float:
    """The paper's threshold rule as a probability for the MAP fit (``fit_threshold_scale``)."""
    a = model.pair_activation(draw.a_w, draw.a_g, model.pair_worker, model.pair_grid)
    margin = (model.xi_n + model.xi_p) / 2 - weighted_distance(a, draw.x[model.pair_i], draw.x[model.pair_j])
    return fit_threshold_scale(margin.cpu().numpy(), model.label.cpu().numpy())


@torch.no_grad()
def embedding_summary(draws: list[Draw]) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and sd of each image's embedding, (n_images, K) each."""
    x = torch.stack([d.x for d in draws]).double()
    sd = x.std(0) if len(draws) > 1 else torch.zeros_like(x[0])
    return x.mean(0).cpu().numpy(), sd.cpu().numpy()
