"""Bayesian Context Embedding Networks (Kim, Mac Aodha & Perona, "Context Embedding Networks").

A worker sorts a grid of images into groups; every pair in the grid gets a
same/different label l (eq. 1). CEN explains the labels with an image
embedding x_i ∈ R^K whose dimensions are attributes, a worker activation a^w
(the worker's prior bias over attributes, §3.1.1) and a grid activation a^g
(what the grid's contents make salient, §3.1.2).

What this module adds to the paper:

* priors instead of penalties: Gaussian embeddings, sparse exponential
  (half-Laplace) activations with a per-dimension scale τ_k, so dimensions no
  HIT needs shrink to zero activation;
* the grid activation's prior scale comes from a context network of the
  spread of the grid's images along each embedding dimension (the paper's
  "attribute variance in the collection of images", §3.1.2), so an unseen grid
  has a predictive distribution;
* a normalised likelihood from the paper's energy (``models.energy.same_logit``)
  with a learned temperature β, so held-out probabilities can be calibrated;
* the ``choice`` variant: each HIT uses one attribute z (or is noise), with
  z ~ Categorical(a^w + a^g) and a^g the context network's output; z is
  summed out exactly, per HIT.

Variants (``variant=``): ``mixture`` a = a^w + a^g (eq. 5), ``worker`` a = a^w
(eq. 3), ``context`` a = a^g (eq. 4), and ``choice``.

The MAP mode of the continuous variants (``paper_loss=True``) swaps in the
priors implied by eq. 8, so that with a point-mass guide the negative log
joint *is* the paper's loss (``models.cen.priors.PaperPriors``).
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
from pyro import poutine
import torch
from pyro.nn import PyroModule

from cen_bayes.crowd import CrowdData, Pairs
from models.cen.hit_images import HitImages
from models.cen.hit_pairs import HitPairs
from models.cen.priors import CrowdPriors, PaperPriors
from models.cen.sparse import csr_rows
from models.energy import GAMMA, XI_N, XI_P, same_logit, weighted_norm

VARIANTS = ("kind", "choice", "mixture", "worker", "context")
CHOICE_VARIANTS = ("kind", "choice")  # a per-HIT choice z, summed out


def choices_beyond_dims(n_columns: int, K: int) -> tuple[str, ...]:
    """Names of a per-HIT choice table's columns after the K dims: ('overall', 'noise') for ``kind``,
    ('noise',) for ``choice``, () for a method that picks a dim only."""
    return ("overall", "noise")[2 - (n_columns - K):] if n_columns > K else ()


class BayesianCEN(PyroModule):
    """Generative story (per training HIT h = (w, g) and pair (i, j) of h):

        τ_k        ~ Exponential(1)                       per-dimension activation scale
        α          ~ Exponential(1)                       how alike workers are (mixture, worker variants)
        x_i        ~ Normal(0, s_x I_K)                   image embedding
        a^w_wk     ~ Gamma(1 + α, (1 + α) / τ_k)          worker bias over attributes (mean τ_k, cv 1/√(1+α));
                                                          choice: Exponential(1 / τ_k)
        a^g_g      ~ Exponential(1 / (τ ⊙ c(x_{grid g}))) grid context; c = ContextNet
                                                          (choice: a^g_g = τ ⊙ c(x_{grid g}))
        β          ~ LogNormal(0, 1)                      likelihood temperature
      continuous variants:
        l_hij      ~ Bernoulli(σ(β·(E(0, d) − E(1, d)))),  d = ||a ⊙ (x_i − x_j)||₂
      choice and kind variants:
        ε          ~ Beta(1, 4)                           the crowd's share of noisy HITs
        ρ          ~ Beta(1, 1)                           kind: the crowd's share of sorts by overall kind
        π_h        = normalise(a^w_w + a^g_g)             the HIT's weight on each dim
        z_h        ~ Categorical((1 − ε)(1 − ρ)·π_h, (1 − ε)·ρ, ε)   attribute k, overall, noise; summed out
                                                          (choice: ρ = 0, no overall)
        l_hij | z=k  ~ Bernoulli(σ(β·(E(0, d_k) − E(1, d_k)))),  d_k = |x_ik − x_jk|
        l_hij | overall ~ Bernoulli(σ(β·(E(0, d) − E(1, d)))),  d = ||√π_h ⊙ (x_i − x_j)||₂
        l_h·  | noise ~ exchangeable: ∫ Π q^l (1−q)^{1−l} Beta(q; u, v) dq

    The worker level is hierarchical so a worker seen in one HIT (anonymous
    crowds: every answer its own worker) borrows strength from the crowd: τ
    says which attributes the crowd favours and α how closely each worker
    follows it; both are learned, and a new worker at predict time is drawn
    from them. α = 0 gives Exponential(1/τ), which the choice variant keeps:
    there α settled near 0 and still cost held-out accuracy on most fit seeds
    of simulated tiny, and split a 3-level attribute over two dims (measured:
    benchmarks/README.md, "Measurements behind the defaults"), while on the
    real ImageNet crowd it helped the worker and mixture variants
    (benchmarks/README.md, "Real crowd partitions").
    The shape stays at or above 1: a learned shape below 1 puts a spike at 0
    in the density that the ELBO chases without bound.

    The noise share ε is the crowd's, one for everyone. It was a share per
    worker, ε_w ~ Beta(1, 4), and a new worker drew ε_w from that prior
    (mean 0.2) at predict time; on the real ImageNet crowd, where every
    held-out answer is a new worker's and the fit calls no training HIT
    noise, that noise mass kept P(same) of pairs of seen images away from 0
    and 1: under-confident (benchmarks/README.md, "Sorting by kind"). A
    learned crowd Beta(1 + κμ, 1 + κ(1 − μ)) over per-worker shares
    collapsed to no noise even on a simulated crowd with 60 % noisy HITs.

    Real people mostly sort a grid by overall kind (its ImageNet category,
    with near categories merged by some), which no single dim explains: the
    ``kind`` variant adds an ``overall`` choice that scores a HIT by the
    distance over all dims, weighted by the same π_h that picks the dim of
    an attribute sort (a worker who cares about colour weighs colour more
    when sorting by kind too). With weights summing to 1 the distance is a
    weighted root mean square over dims, on the scale of a one-dim
    distance: weights scaled to K (equal weights giving the Euclidean
    distance) made every pair look far apart at the start of a fit, and ρ
    collapsed to 0 on the real ImageNet crowd. The overall choice is on from
    the first step: kept off for a warm-up, the attribute dims form first
    and it never gets taken. It costs accuracy on crowds that sort by one
    attribute at a time (the simulated ones): a distance over all dims is
    blind to the embedding's axes, so it slows their alignment with single
    attributes; the automatic choice of variant (``inference.select``)
    decides per crowd (measurements in benchmarks/README.md, "Sorting by kind").

    The model holds the training pairs as buffers; ``forward(hits)`` scores a
    minibatch of training HITs (all when ``hits`` is None). In a data-parallel
    fit each process's model holds its shard of the training HITs and
    ``plate_sizes`` gives the whole training set's HIT and pair counts, so each
    shard's likelihood is scaled to the whole (``models.svi_trainer``).
    """

    def __init__(self, data: CrowdData, train_hits: np.ndarray, K: int = 10, variant: str = "choice",
                 paper_loss: bool = False, gamma: float = GAMMA, xi_p: float = XI_P, xi_n: float = XI_N,
                 embed_scale: float = 3.0, priors: CrowdPriors | PaperPriors | None = None,
                 plate_sizes: tuple[int, int] | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.priors = priors or (PaperPriors() if paper_loss else CrowdPriors())
        if self.priors.paper_loss and variant in CHOICE_VARIANTS:
            raise ValueError("the paper's loss exists for the mixture, worker and context variants only")
        self.K, self.variant = K, variant
        self.overall = variant == "kind"
        self.gamma, self.xi_p, self.xi_n, self.embed_scale = gamma, xi_p, xi_n, embed_scale
        self.n_images, self.n_workers, self.n_grids = data.n_images, data.n_workers, data.n_grids

        train_hits = np.asarray(train_hits, dtype=bool)
        train_pair = torch.from_numpy(train_hits[data.pairs.hit.numpy()])
        pairs = data.pairs.subset(train_pair)
        # renumber training HITs 0..H-1; pairs are sorted by HIT, so each HIT's pairs are contiguous
        hit_codes = torch.from_numpy(np.flatnonzero(train_hits))
        local = torch.full((data.n_hits,), -1, dtype=torch.long)
        local[hit_codes] = torch.arange(len(hit_codes))
        pair_hit = local[pairs.hit]
        counts = torch.bincount(pair_hit, minlength=len(hit_codes))
        self.n_train_hits, self.n_train_pairs = len(hit_codes), len(pairs)
        # the HITs and pairs the likelihood stands for: those held here, unless this model holds one process's
        # shard of a data-parallel fit, whose likelihood is scaled up to the whole training set
        self.plate_hits, self.plate_pairs = plate_sizes or (self.n_train_hits, self.n_train_pairs)

        buffers = {
            "pair_i": pairs.i, "pair_j": pairs.j, "pair_worker": pairs.worker, "pair_grid": pairs.grid,
            "pair_hit": pair_hit, "label": pairs.label,
            "hit_ptr": torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
            "hit_worker": torch.as_tensor(data.hits["worker"].to_numpy()[train_hits], dtype=torch.long),
            "hit_grid": torch.as_tensor(data.hits["grid"].to_numpy()[train_hits], dtype=torch.long),
            "grid_ptr": data.grid_ptr, "grid_image": data.grid_image,
            "member_grid": torch.repeat_interleave(torch.arange(data.n_grids), data.grid_ptr.diff()),
            "zero": torch.zeros(()), "one": torch.ones(()),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value)
        if self.sums_out_choice:  # each distinct image pair scored once (models.cen.hit_pairs)
            self.hit_pairs = HitPairs(pairs.i, pairs.j, pairs.label, pair_hit, len(hit_codes), data.n_images,
                                      overall=self.overall)
        else:  # every pair's distance from one batched cdist per step (models.cen.hit_images)
            self.hit_images = HitImages(pairs.i, pairs.j, pair_hit, len(hit_codes), data.n_images)
        self.priors.attach(self, data)  # what its priors need: the context network, pair counts
        self.noise_u = pyro.nn.PyroParam(torch.tensor(1.0), constraint=dist.constraints.positive)
        self.noise_v = pyro.nn.PyroParam(torch.tensor(1.0), constraint=dist.constraints.positive)

    # ----- which activations a variant uses -------------------------------------------
    @property
    def paper_loss(self) -> bool:
        """The MAP mode's priors (``PaperPriors``): with a point-mass guide the objective is eq. 8."""
        return self.priors.paper_loss

    @property
    def sums_out_choice(self) -> bool:
        return self.variant in CHOICE_VARIANTS

    @property
    def uses_worker(self) -> bool:
        return self.variant in (*CHOICE_VARIANTS, "mixture", "worker")

    @property
    def uses_context(self) -> bool:
        return self.variant in (*CHOICE_VARIANTS, "mixture", "context")

    # ----- one method per distribution (the choice's own here, the rest ``self.priors``') --------
    def grid_spread(self, x: torch.Tensor) -> torch.Tensor:
        """Standard deviation of each grid's images along each dimension, (n_grids, K)."""
        members = x[..., self.grid_image, :]
        size = self.grid_ptr.diff().to(x.dtype).unsqueeze(-1)
        shape = x.shape[:-2] + (self.n_grids, self.K)
        total = x.new_zeros(shape).index_add_(-2, self.member_grid, members)
        square = x.new_zeros(shape).index_add_(-2, self.member_grid, members ** 2)
        mean = total / size
        return (square / size - mean ** 2).clamp(min=0.0).sqrt()

    def overall_share(self) -> torch.Tensor | None:
        return pyro.sample("rho", dist.Beta(self.one, self.one)) if self.overall else None

    def noise_share(self) -> torch.Tensor:
        return pyro.sample("eps", dist.Beta(self.one, 4.0 * self.one))

    # ----- the story ----------------------------------------------------------------------
    def forward(self, hits: torch.Tensor | None = None, noise: bool = True):
        """Score the training HITs ``hits`` (all when None). ``noise=False`` leaves the noise option
        out of the choice: early in a fit the embedding explains nothing and the flexible noise
        component would claim every HIT, leaving the embedding no gradient, so ``fit_svi`` starts
        with it off (a warm-up)."""
        priors = self.priors
        tau = priors.activation_scale(self)
        x = priors.embeddings(self)
        alpha = priors.worker_concentration(self)
        a_w = priors.worker_activations(self, tau, alpha) if self.uses_worker else None
        a_g = priors.grid_activations(self, x, tau) if self.uses_context else None
        beta = priors.temperature(self)
        if self.sums_out_choice:
            rho, eps = self.overall_share(), self.noise_share()
            with pyro.plate("hits", self.n_train_hits, subsample=hits) as h, \
                    poutine.scale(scale=self.plate_hits / self.n_train_hits):  # a shard counts for the whole
                log_joint = self.hit_log_joint(x, a_w, a_g, beta, rho, eps, self.hit_pairs, hits,
                                               self.hit_worker[h], self.hit_grid[h], noise)
                pyro.factor("labels", torch.logsumexp(log_joint, -1))
            return
        if hits is None:  # all training pairs
            pair_index, label = None, self.label
            d = self.hit_images.distances(x, self.pair_activation(a_w, a_g, self.hit_worker, self.hit_grid))
        else:  # the pairs of a minibatch of HITs
            pair_index = csr_rows(self.hit_ptr, hits)[0]
            label, diff = self.label[pair_index], x[self.pair_i[pair_index]] - x[self.pair_j[pair_index]]
            d = weighted_norm(self.pair_activation(a_w, a_g, self.pair_worker[pair_index],
                                                   self.pair_grid[pair_index]), diff)
        with pyro.plate("pairs", self.n_train_pairs, subsample=pair_index), \
                poutine.scale(scale=self.plate_pairs / self.n_train_pairs):
            priors.labels(self, label, d, beta)

    # ----- pieces shared by training and prediction ---------------------------------------
    def pair_activation(self, a_w, a_g, worker, grid):
        if self.variant == "worker":
            return a_w[worker]
        if self.variant == "context":
            return a_g[grid]
        return a_w[worker] + a_g[grid]

    def choice_weights(self, a_w, a_g, worker, grid) -> torch.Tensor:
        """π_h = normalise(a^w_w + a^g_g) per HIT: which dim an attribute sort uses, and how the
        overall sort weighs the dims."""
        mix = a_w[worker] + a_g[grid]
        return mix / mix.sum(-1, keepdim=True)

    def choice_log_prior(self, a_w, a_g, rho, eps, worker, grid):
        """log P(z) per HIT, columns: attribute 0..K−1, then overall (``kind``), then noise."""
        weights = self.choice_weights(a_w, a_g, worker, grid)
        clean = torch.log1p(-eps).expand(len(weights), 1)
        columns = [clean + torch.log(weights)]
        if self.overall:
            columns = [columns[0] + torch.log1p(-rho), clean + torch.log(rho)]
        return torch.cat([*columns, torch.log(eps).expand(len(weights), 1)], -1)

    def noise_log_lik(self, n_same, n_diff):
        """log ∫ q^{n_same}(1 − q)^{n_diff} Beta(q; u, v) dq: one-group and random HITs."""
        u, v = self.noise_u, self.noise_v
        return (torch.lgamma(n_same + u) + torch.lgamma(n_diff + v) - torch.lgamma(n_same + n_diff + u + v)
                - torch.lgamma(u) - torch.lgamma(v) + torch.lgamma(u + v))

    def hit_log_joint(self, x, a_w, a_g, beta, rho, eps, index: HitPairs, hits, hit_worker, hit_grid,
                      noise: bool = True):
        """log P(z) + log P(labels of h | z) per HIT, columns as ``choice_log_prior``; logsumexp sums z out.

        ``index`` holds the HITs' pairs; ``hits`` picks some of its HITs (None:
        all), and ``hit_worker`` / ``hit_grid`` belong to the picked HITs. For all
        HITs each distinct image pair is scored once and summed into its HITs by
        a sparse product, a minibatch scores its own pairs (``HitPairs``), so
        summing z out costs K passes over the pairs, not a loop over HITs; the
        overall sort, whose weights are the HIT's own, costs one pass over the
        HITs' pairs.
        """
        logit_of_distance = lambda d: same_logit(d, self.gamma, self.xi_p, self.xi_n, beta)  # noqa: E731
        pairs = None if hits is None else index.pairs_of(hits)  # a minibatch's pairs, found once for both sorts
        per_hit = [index.log_lik_per_hit(x, logit_of_distance, hits, pairs)]
        if self.overall:
            weight = self.choice_weights(a_w, a_g, hit_worker, hit_grid)
            per_hit.append(index.weighted_log_lik_per_hit(x, weight, logit_of_distance, hits, pairs).unsqueeze(-1))
        n_same, n_all = index.counts(hits)
        noise_ll = self.noise_log_lik(n_same, n_all - n_same)
        if not noise:
            noise_ll = torch.full_like(noise_ll, -torch.inf)
        prior = self.choice_log_prior(a_w, a_g, rho, eps, hit_worker, hit_grid)
        return prior + torch.cat([*per_hit, noise_ll.unsqueeze(-1)], -1)

    def pair_same_probability(self, x, a_w, a_g, beta, rho, eps, pairs: Pairs, local, hit_worker, hit_grid,
                              threshold_scale=None) -> torch.Tensor:
        """P(same) of each pair of ``pairs`` under one draw of the latents, before any label of its HIT
        is seen: the likelihood above, marginal over the HIT's choice z for the choice variants.

        ``local`` is each pair's position among the HITs whose ``hit_worker`` and
        ``hit_grid`` are given. This is what prediction averages over posterior
        draws (``inference.predict``), so the fit and the prediction read one
        definition of the likelihood.
        """
        diff = x[pairs.i] - x[pairs.j]
        if self.sums_out_choice:
            choice = self.choice_log_prior(a_w, a_g, rho, eps, hit_worker, hit_grid).exp()[local]
            weight = self.choice_weights(a_w, a_g, hit_worker, hit_grid)[local] if self.overall else None
            return self.same_probability_given_choice(diff, beta, choice, weight)
        d = weighted_norm(self.pair_activation(a_w, a_g, pairs.worker, pairs.grid), diff)
        return self.priors.same_probability(self, d, beta, threshold_scale)

    def same_probability_given_choice(self, diff, beta, choice, weight=None) -> torch.Tensor:
        """P(same) of pairs whose images differ by ``diff`` (..., K) when their HIT's choice z has
        probabilities ``choice`` (..., columns as ``choice_log_prior``) and, for ``kind``, the overall
        sort weighs the dims by ``weight`` (..., K): the mixture over z of the choice variants'
        likelihood, in three parts (``dim_same_probability``, ``overall_same_probability``,
        ``mix_choices``) that the design of new grids (``inference.predict``) also calls one by one.
        Leading dims broadcast."""
        overall = self.overall_same_probability(diff, weight, beta) if self.overall else None
        return self.mix_choices(choice, self.dim_same_probability(diff, beta), overall)

    def dim_same_probability(self, diff, beta) -> torch.Tensor:
        """(..., K) P(same) of pairs differing by ``diff`` when their HIT sorts by each dim alone."""
        return torch.sigmoid(same_logit(diff.abs(), self.gamma, self.xi_p, self.xi_n, beta))

    def overall_same_probability(self, diff, weight, beta) -> torch.Tensor:
        """(...) P(same) of pairs differing by ``diff`` when their HIT sorts by overall kind with dim
        weights ``weight`` (the HIT's π)."""
        return torch.sigmoid(same_logit(weighted_norm(weight.sqrt(), diff), self.gamma, self.xi_p, self.xi_n, beta))

    def mix_choices(self, choice, per_dim, overall=None) -> torch.Tensor:
        """The mixture over the HIT's choice z: ``choice`` (columns as ``choice_log_prior``) weighs P(same)
        under each dim (``per_dim``, (..., K)), the overall sort (``overall``, kind) and noise (the
        exchangeable component's mean)."""
        # summed without concatenating the columns first: the design of new grids mixes millions of pairs
        mixed = torch.einsum("...k,...k->...", per_dim, choice[..., :self.K])
        if overall is not None:
            mixed = mixed + choice[..., self.K] * overall
        return mixed + choice[..., -1] * (self.noise_u / (self.noise_u + self.noise_v))  # noise: the Beta's mean
