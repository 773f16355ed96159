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
from models.energy import fit_threshold_scale, paper_pair_loss, weighted_distance


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
