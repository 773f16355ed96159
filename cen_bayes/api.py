"""``CEN``: the Bayesian CEN as an estimator, from an annotation table to DataFrames.

    from cen_bayes import CEN
    cen = CEN(seed=0).fit("annotations.csv")       # all of it; holdout=0.15 keeps grids back
    cen.embeddings()                                # image_id -> mean_k, sd_k
    cen.predict_proba(pairs)                        # image_i, image_j [, worker_id, grid_id] -> P(same)
    cen.hits(), cen.workers(), cen.to_inference_data()
    cen.save("fit/"); CEN.load("fit/").predict_proba(pairs)

The class owns what a fit is: the choice of variant and K (``"auto"``:
``inference.select``), the model (``models.cen``), the SVI fit
(``inference.fit``) and a fixed set of posterior draws (``inference.predict``),
from which every output is computed, so two calls (or a saved and reloaded
model) agree exactly. Pyro keeps parameters in one global store, keyed by
name; each ``CEN`` keeps its own and swaps it in for whatever it does
(``ParamStoreDict.scope``), so fitted models coexist in one process. It
also implements ``PairMethod`` (``fit(data, split)``,
``predict_proba(data, pairs)``, ``embedding_``), the interface the
baselines share, so the CLI and the benchmarks treat it as one method among
them.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import torch

from cen_bayes.atomic import atomic_path, write_text
from cen_bayes.crowd import CrowdData, Pairs
from cen_bayes.splits import Split, split_by_grid
from models.cen import CHOICE_VARIANTS, BayesianCEN
from models.energy import GAMMA
from models.pair_method import PairMethod
from models.svi_trainer import SVIRun, process_group

AUTO = "auto"
SAVED_TABLE, SAVED_STATE = "annotations.parquet", "model.pt"  # what ``save`` writes beside settings.json
SAVED_SETTINGS = "settings.json"
RUN_MODEL = "model"  # the folder of a ``python -m inference.svi`` run that holds its fitted CEN (``save``)
WORKER_INTERVAL = (0.05, 0.95)  # the credible interval ``workers`` reports


class CEN(PairMethod):
    """The Bayesian Context Embedding Network, fitted by SVI (or MAP with ``map_mode``).

    ``K`` / ``variant``: ``"auto"`` (the defaults) chooses them on validation
    grids (``inference.select``); otherwise as in ``models.cen``. ``draws``:
    posterior draws behind every prediction and summary. ``steps``, ``lr``,
    ``batch_hits``, ``checkpoint``, ``resume``, ``checkpoint_every``: the
    SVI loop's (``inference.fit.fit_svi``).

    Under ``torchrun`` each process fits its shard of the training HITs and
    rank 0 alone then builds the whole fitted model, so the others hold no
    more than their shard: outputs, predictions and ``save`` belong on rank 0
    (elsewhere they say so).
    """

    name = "cen"

    def __init__(self, K: int | str = AUTO, variant: str = AUTO, *, map_mode: bool = False, steps: int | None = None,
                 lr: float | None = None, batch_hits: int | None = None, draws: int = 100, seed: int = 0,
                 device: str = "cpu", progress: bool = True, gamma: float = GAMMA, checkpoint=None,
                 resume: bool = False, checkpoint_every: int = 100):
        if map_mode and AUTO in (variant, K):
            raise ValueError("--map fits one given variant and K; give --variant and --K (e.g. --variant mixture)")
        self.K, self.variant, self.map_mode = K, variant, map_mode
        self.steps, self.lr, self.batch_hits, self.draws = steps, lr, batch_hits, draws
        self.seed, self.device, self.progress, self.gamma = seed, device, progress, gamma
        self.checkpoint, self.resume, self.checkpoint_every = checkpoint, resume, checkpoint_every
        self._params: dict | None = None  # this model's pyro parameter store state (``_own_params``)
        self.selection_ = None
        self.interrupted_ = False

    # ----- fitting ----------------------------------------------------------------------
    @contextmanager
    def _own_params(self):
        """Pyro's global parameter store holding this model's parameters only, for the block's length."""
        with pyro.get_param_store().scope(self._params) as state:
            self._params = state
            yield

    def fit(self, data, split: Split | None = None, *, holdout: float | None = None) -> "CEN":
        """Fit on a table (DataFrame, CSV or Parquet path) or a ``CrowdData``.

        All HITs train unless ``split`` names the training HITs or ``holdout``
        asks for a seeded share of the grids to be held out whole (then
        ``split_`` says which, and ``score`` can be computed on them).
        """
        from inference.fit import fit_svi
        from inference.select import select

        data = data if isinstance(data, CrowdData) else CrowdData.from_source(data)
        if split is None:
            split = split_by_grid(data, holdout or 0.0, seed=self.seed)
        self.data_, self.split_ = data, split
        self.variant_, self.K_ = self.variant, self.K
        if AUTO in (self.variant, self.K):
            self.selection_ = select(data, split, self.variant, self.K, steps=self.steps, seed=self.seed,
                                     device=self.device, progress=self.progress, lr=self.lr,
                                     batch_hits=self.batch_hits, gamma=self.gamma)
            self.variant_, self.K_ = self.selection_.variant, self.selection_.K
        self.K_ = int(self.K_)
        rank, world = process_group()
        fit_hits, plate_sizes, start_pairs = split.train_hits, None, None
        if world > 1:  # data-parallel (torchrun): this process fits its shard of the training HITs
            if split.train_hits.sum() < world:
                raise ValueError(f"{int(split.train_hits.sum())} training HITs cannot be shared among {world} "
                                 "processes")
            fit_hits = np.zeros_like(split.train_hits)
            fit_hits[np.flatnonzero(split.train_hits)[rank::world]] = True
            start_pairs = data.pairs.subset(split.pair_masks(data)[0])
            plate_sizes = (int(split.train_hits.sum()), len(start_pairs))
        pyro.set_rng_seed(self.seed)  # the context network's initial weights come from torch's global generator
        self.model_ = self._model(data, fit_hits, plate_sizes)
        with self._own_params():
            self.fit_result_ = fit_svi(self.model_, map_mode=self.map_mode, steps=self.steps, lr=self.lr,
                                       batch_hits=self.batch_hits, seed=self.seed, device=self.device,
                                       progress=self.progress, checkpoint=self.checkpoint, resume=self.resume,
                                       checkpoint_every=self.checkpoint_every, start_pairs=start_pairs,
                                       sharded=world > 1)
            if world > 1 and rank == 0 and not self.fit_result_.interrupted:  # outputs read all training HITs
                trained = {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}
                pyro.clear_param_store()
                self.model_ = self._model(data, split.train_hits)
                self.fit_result_.guide = self._guide_holding(trained, "the fitted parameters")
        self.guide_ = self.fit_result_.guide
        self.interrupted_ = self.fit_result_.interrupted
        self.fit_seconds_ = self.fit_result_.seconds
        self.shard_rank_ = rank if world > 1 and rank > 0 else None
        if not self.interrupted_ and self.shard_rank_ is None:
            self._summarise()
        return self

    def _model(self, data: CrowdData, train_hits: np.ndarray, plate_sizes=None) -> BayesianCEN:
        return BayesianCEN(data, train_hits, K=self.K_, variant=self.variant_, gamma=self.gamma,
                           paper_loss=self.map_mode and self.variant_ not in CHOICE_VARIANTS,
                           plate_sizes=plate_sizes).to(self.device)

    def _guide_holding(self, params: dict, source) -> torch.nn.Module:
        """A guide for ``model_`` with the model's and guide's parameters set to ``params`` (saved ones, or
        those a shard's model was fitted with: the same names and shapes), in the current param store."""
        from inference.fit import make_guide
        from models.svi_trainer import load_params

        guide = make_guide(self.model_, self.map_mode, self.seed, spectral_start=False)  # no start: overwritten
        guide()  # creates the parameters, which then take the given values
        load_params(params, source)
        return guide

    def _summarise(self) -> None:
        """The fixed posterior draws every output reads, and the summaries the PairMethod interface exposes."""
        from inference import predict

        with self._own_params():
            self.draws_ = predict.posterior_draws(self.model_, self.guide_, 1 if self.map_mode else self.draws,
                                                  self.trained_grids_, seed=self.seed)
        self.threshold_scale_ = (predict.threshold_scale(self.model_, self.draws_[0]) if self.model_.paper_loss
                                 else None)
        mean, sd = predict.embedding_summary(self.draws_)
        self.embedding_, self.embedding_sd_ = mean, None if self.map_mode else sd
        self._p_attr_draws = None

    @property
    def trained_grids_(self) -> torch.Tensor:
        """Bool per grid: some training HIT showed it (the others' context is drawn from its prior)."""
        seen = torch.zeros(self.data_.n_grids, dtype=torch.bool, device=self.model_.label.device)
        seen[torch.as_tensor(self.data_.hits["grid"].to_numpy()[self.split_.train_hits], device=seen.device)] = True
        return seen

    def _check_fitted(self) -> None:
        if getattr(self, "shard_rank_", None) is not None:
            raise RuntimeError(f"this process (rank {self.shard_rank_} of a data-parallel fit) holds its shard of the "
                               "training HITs only; rank 0 holds the fitted model: predict and save there")
        if not hasattr(self, "draws_"):
            raise RuntimeError("this CEN is not fitted (or its fit was interrupted): call fit first")

    # ----- the PairMethod interface -----------------------------------------------------------
    def predict_proba(self, data, pairs: Pairs | None = None) -> np.ndarray:
        """P(same group) per pair, the posterior predictive mean.

        ``predict_proba(frame)``: a DataFrame with ``image_i``, ``image_j`` and
        optionally ``worker_id``, ``grid_id``. An image, worker or grid the
        fitted table lacks (or a missing id) is predicted as a new one drawn from
        the collection: in each posterior draw a new image takes a random
        trained image's embedding, a new worker a draw from the population
        prior, a new grid the context of a random training grid.
        ``predict_proba(data, pairs)``: pairs of the fitted ``CrowdData``.
        Pairs are scored a chunk at a time, so millions of them need no more memory than a chunk.
        """
        from inference import predict

        return predict.pair_probability(*self._prediction_inputs(data, pairs), **self._prediction_options())

    def predict_proba_draws(self, data, pairs: Pairs | None = None) -> np.ndarray:
        """(draws, pairs) P(same) under each posterior draw; ``predict_proba`` is their mean."""
        from inference import predict

        return predict.pair_probability_draws(*self._prediction_inputs(data, pairs), **self._prediction_options())

    def _prediction_inputs(self, data, pairs: Pairs | None) -> tuple:
        self._check_fitted()
        if isinstance(data, CrowdData) and data is not self.data_:
            raise ValueError("predict_proba(data, pairs) takes the CrowdData this CEN was fitted on; "
                             "give other pairs as a DataFrame with image_i, image_j")
        pairs = pairs if isinstance(data, CrowdData) else _query_codes(self.data_, data)
        return self.model_, self.draws_, self.data_, pairs, self.threshold_scale_

    def _prediction_options(self) -> dict:
        return {"trained_grids": self.trained_grids_, "point": self.map_mode, "seed": self.seed,
                "progress": self.progress}

    def hit_attribute_probabilities(self, data, hit_index) -> np.ndarray:
        """(n, K [+ 2]) posterior probability that each HIT used each dim (then overall, noise)."""
        return self.attribute_probability_draws().mean(0, dtype=np.float64)[np.asarray(hit_index)]

    def attribute_probability_draws(self) -> np.ndarray:
        """(draws, HITs, K [+ 2]) per draw, as ``inference.predict.attribute_probability_draws``; computed once."""
        from inference import predict

        self._check_fitted()
        if self._p_attr_draws is None:
            self._p_attr_draws = predict.attribute_probability_draws(self.model_, self.draws_, self.data_,
                                                                     self.split_.train_hits, progress=self.progress)
        return self._p_attr_draws

    def diagnostics(self, psis_draws: int = 200) -> dict:
        """The fit's ELBO trace, PSIS k-hat over ``psis_draws`` guide draws (0 skips it) and warning
        (``inference.diagnostics``), as ``metrics.json`` reports them."""
        from inference.diagnostics import variational_diagnostics

        self._check_fitted()
        if not hasattr(self, "fit_result_"):
            raise RuntimeError("this CEN was saved without its fit trace (by an older version); refit it to diagnose")
        with self._own_params():
            return variational_diagnostics(self.model_, self.guide_, self.fit_result_.losses, self.map_mode,
                                           psis_draws, self.seed, progress=self.progress)

    # ----- DataFrames -------------------------------------------------------------------------
    def embeddings(self) -> pd.DataFrame:
        """One row per image (``image_id``): ``mean_k`` and (not MAP) ``sd_k`` of its embedding."""
        from inference.tables import embedding_table

        self._check_fitted()
        return embedding_table(self.data_.images, self.embedding_, self.embedding_sd_).set_index("image_id")

    def hits(self) -> pd.DataFrame:
        """One row per HIT, as ``hits.csv``: ids, split, P(attribute k), P(overall), P(noise), uncertainty."""
        from inference.hit_uncertainty import hit_uncertainty
        from inference.tables import hit_table

        p_attr = self.hit_attribute_probabilities(self.data_, np.arange(self.data_.n_hits))
        return hit_table(self.data_, self.split_, p_attr, hit_uncertainty(p_attr, self.K_), self.K_)

    def workers(self) -> pd.DataFrame:
        """One row per worker (``worker_id``): the share of each dim in the worker's bias a^w / Σ a^w,
        its posterior mean (``share_k``) and 90 % credible interval (``share_k_low``, ``share_k_high``)."""
        self._check_fitted()
        if self.draws_[0].a_w is None:
            raise ValueError(f"the {self.variant_} variant has no worker activations")
        a_w = torch.stack([d.a_w for d in self.draws_]).double()
        share = (a_w / a_w.sum(-1, keepdim=True)).cpu().numpy()
        low, high = np.quantile(share, WORKER_INTERVAL, axis=0)
        columns = {}
        for k in range(self.K_):
            columns.update({f"share_{k}": share[..., k].mean(0), f"share_{k}_low": low[:, k],
                            f"share_{k}_high": high[:, k]})
        return pd.DataFrame(columns, index=self.data_.workers)

    def to_inference_data(self):
        """The posterior as ArviZ InferenceData (what ``posterior.nc`` holds; ``inference.arviz_export``),
        with the held-out pairs' predictions when a hold-out was asked for."""
        from inference.arviz_export import inference_data

        test_pairs = self.data_.pairs.subset(self.split_.pair_masks(self.data_)[1])
        return inference_data(self.model_, self.draws_, self.data_, self.split_.train_hits, test_pairs,
                              lambda pairs: self.predict_proba_draws(self.data_, pairs),
                              self.attribute_probability_draws(), seed=self.seed)

    # ----- saving -------------------------------------------------------------------------------
    def settings(self) -> dict:
        """The constructor's arguments with the chosen variant and K: what ``load`` rebuilds from."""
        return {"K": self.K_, "variant": self.variant_, "map_mode": self.map_mode, "steps": self.steps,
                "lr": self.lr, "batch_hits": self.batch_hits, "draws": self.draws, "seed": self.seed,
                "gamma": self.gamma}

    def save(self, directory) -> Path:
        """Write the fitted table, the training HITs, the settings and the parameters to ``directory``."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / SAVED_TABLE) as partial:
            self.data_.table[["worker_id", "grid_id", "image_id", "group"]].to_parquet(partial, index=False)
        params = {name: value.detach().cpu().clone() for name, value in self._params["params"].items()}
        with atomic_path(directory / SAVED_STATE) as partial:
            torch.save({"params": params, "train_hits": self.split_.train_hits, "test_hits": self.split_.test_hits,
                        "selection": None if self.selection_ is None else self.selection_.records(),
                        "fit": {field.name: getattr(self.fit_result_, field.name)  # the ELBO trace, for
                                for field in fields(SVIRun)}}, partial)                    # ``diagnostics``
        write_text(directory / SAVED_SETTINGS, json.dumps(self.settings(), indent=2))
        return directory

    @staticmethod
    def is_saved(directory) -> bool:
        """``directory`` holds what ``save`` writes (its settings and parameters), so ``load`` can read it."""
        return all((Path(directory) / name).is_file() for name in (SAVED_SETTINGS, SAVED_STATE, SAVED_TABLE))

    @classmethod
    def load(cls, directory, device: str = "cpu", progress: bool = False) -> "CEN":
        """A model ``save`` wrote: it predicts exactly what the saved one did (on the same device)."""
        from inference.fit import FitResult

        directory = Path(directory)
        settings = json.loads((directory / SAVED_SETTINGS).read_text())
        state = torch.load(directory / SAVED_STATE, map_location=device, weights_only=False)
        cen = cls(**settings, device=device, progress=progress)
        cen.variant_, cen.K_ = settings["variant"], settings["K"]
        cen.data_ = CrowdData.from_source(directory / SAVED_TABLE)
        cen.split_ = Split(train_hits=state["train_hits"], test_hits=state["test_hits"])
        pyro.set_rng_seed(cen.seed)
        cen.model_ = cen._model(cen.data_, cen.split_.train_hits)
        with cen._own_params():
            cen.guide_ = cen._guide_holding(state["params"], directory / SAVED_STATE)
        if state.get("fit"):  # saved by a version that kept the trace
            cen.fit_result_ = FitResult(guide=cen.guide_, **state["fit"])
            cen.interrupted_, cen.fit_seconds_ = cen.fit_result_.interrupted, cen.fit_result_.seconds
        cen._summarise()
        return cen


def _query_codes(data: CrowdData, frame: pd.DataFrame) -> Pairs:
    """Integer codes of the pairs in ``frame``; an id the fitted table lacks (or a missing one) gets
    a code past the table's own (n_images + u, n_workers + u, n_grids + u, u counting the distinct
    new ids), which ``inference.predict.pair_probability_chunks`` fills from the collection."""
    missing = [c for c in ("image_i", "image_j") if c not in frame.columns]
    if missing:
        raise ValueError(f"pairs need columns image_i and image_j; missing {', '.join(missing)}")

    def codes(known: pd.Index, values) -> np.ndarray:
        values = pd.Series(values, dtype=object).reset_index(drop=True)
        missing = values.isna().to_numpy()
        text = values.astype(str).to_numpy(dtype=object)
        code = pd.Index(np.asarray(known, dtype=str)).get_indexer(text)
        code[missing] = -1  # every row without an id: one new worker / grid
        new = code < 0
        code[new] = len(known) + pd.factorize(np.where(missing, "\0missing", text)[new])[0]
        return code

    n = len(frame)
    both = pd.concat([frame["image_i"], frame["image_j"]], ignore_index=True)
    if both.isna().any():
        row = int(np.flatnonzero(both.isna().to_numpy())[0] % n)
        raise ValueError(f"pairs: row {row} has no image id (image_i and image_j are required)")
    images = codes(data.images, both)
    worker = codes(data.workers, frame["worker_id"] if "worker_id" in frame else [None] * n)
    grid = codes(data.grids, frame["grid_id"] if "grid_id" in frame else [None] * n)
    hit = pd.factorize(worker.astype(np.int64) * (grid.max() + 1) + grid)[0]
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    return Pairs(worker=as_tensor(worker), grid=as_tensor(grid), hit=as_tensor(hit), i=as_tensor(images[:n]),
                 j=as_tensor(images[n:]), label=torch.zeros(n))
