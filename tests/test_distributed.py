"""Data-parallel SVI (models.svi_trainer): 2 processes on CPU (gloo) reach the parameters 1 process
reaches taking the same minibatches, whether every process holds every HIT or (``CEN``) only its shard."""

import signal

import numpy as np
import pyro
import pytest
import torch
import torch.distributed as torch_distributed
import torch.multiprocessing as mp

from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from cen_bayes.splits import Split, split_by_grid
from inference.fit import fit_svi
from models import svi_trainer
from models.cen import BayesianCEN

FIT = dict(steps=12, batch_hits=16, seed=0, progress=False)
# Sums split across processes round differently, and Adam divides each gradient by its own running size, so a
# coordinate with a tiny gradient carries that rounding into its step: measured up to 4e-5 on embeddings of size
# ~6 after 12 steps; a missing likelihood scale moves them by orders of magnitude more.
PARAM_ATOL = 1e-4


def fitted_params(variant: str, **options) -> dict:
    torch.set_num_threads(1)
    data = CrowdData.from_source(load_dataset("tiny", seed=0).table)
    split = split_by_grid(data, 0.15, seed=0)
    pyro.set_rng_seed(0)
    model = BayesianCEN(data, split.train_hits, K=4, variant=variant)
    result = fit_svi(model, **{**FIT, **options})
    params = {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}
    return {"params": params, "losses": result.losses}


def rank_main(rank: int, world: int, rendezvous: str, out: str, variant: str, options: dict) -> None:
    torch_distributed.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        result = fitted_params(variant, **options)
        torch.save(result, f"{out}.{rank}")
    finally:
        torch_distributed.destroy_process_group()


@pytest.mark.parametrize("variant,options", [("choice", {}), ("kind", {"batch_hits": None})])
def test_two_processes_reach_the_one_process_parameters(tmp_path, variant, options):
    mp.start_processes(rank_main, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "params"), variant,
                                        options), nprocs=2, start_method="spawn")
    alone = fitted_params(variant, **options)
    ranks = [torch.load(tmp_path / f"params.{rank}", weights_only=False) for rank in range(2)]
    for name, value in alone["params"].items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name  # the ranks stay identical
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=1e-4, atol=PARAM_ATOL, msg=name)
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(alone["losses"]), rtol=1e-4, atol=1e-6)
    assert alone["params"]["AutoNormal.locs.x"].abs().sum() > 0  # the fit moved


def cen_fit(options: dict) -> dict:
    from cen_bayes import CEN

    torch.set_num_threads(1)
    data = CrowdData.from_source(load_dataset("tiny", seed=0).table)
    split = split_by_grid(data, 0.15, seed=0)
    cen = CEN(K=4, seed=0, progress=False, draws=5, **options).fit(data, split)
    test = data.pairs.subset(split.pair_masks(data)[1])
    with cen._own_params():
        params = {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}
    try:  # rank 0 alone holds the whole fitted model; the other ranks only their shard
        p_same, refusal = cen.predict_proba(data, test), None
    except RuntimeError as error:
        p_same, refusal = None, str(error)
    return {"params": params, "p_same": p_same, "refusal": refusal, "losses": cen.fit_result_.losses}


def cen_rank_main(rank: int, world: int, rendezvous: str, out: str, options: dict) -> None:
    torch_distributed.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        torch.save(cen_fit(options), f"{out}.{rank}")
    finally:
        torch_distributed.destroy_process_group()


@pytest.mark.parametrize("options", [dict(variant="choice", steps=12), dict(variant="kind", steps=12)])
def test_sharded_cen_matches_one_process_full_batch(tmp_path, options):
    """Under torchrun each CEN process fits only its shard of the training HITs, its plates scaled to the
    whole set; full batch, the weighted gradients are the one-process gradient, so the fits agree."""
    mp.start_processes(cen_rank_main, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "fit"), options),
                       nprocs=2, start_method="spawn")
    alone = cen_fit(options)
    ranks = [torch.load(tmp_path / f"fit.{rank}", weights_only=False) for rank in range(2)]
    for name, value in alone["params"].items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=1e-4, atol=PARAM_ATOL, msg=name)
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(alone["losses"]), rtol=1e-4, atol=1e-6)
    assert abs(ranks[0]["p_same"] - alone["p_same"]).max() < 1e-4
    assert ranks[1]["p_same"] is None and "rank 0 holds the fitted model" in ranks[1]["refusal"]


def test_sharded_minibatches_keep_the_ranks_identical(tmp_path):
    """With minibatches each shard draws its own; the ranks still take the same steps."""
    options = dict(variant="choice", steps=15, batch_hits=30)
    mp.start_processes(cen_rank_main, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "fit"), options),
                       nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"fit.{rank}", weights_only=False) for rank in range(2)]
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name
    assert ranks[0]["losses"] == ranks[1]["losses"]


@pytest.mark.parametrize("variant", ["choice", "auto"])
def test_torchrun_cli_matches_one_process(tmp_path, variant):
    """``torchrun --nproc-per-node 2 -m inference.svi``: one set of outputs, written by rank 0, with the
    one-process run's predictions (full batch; float tolerance); with ``--variant auto`` every candidate
    is fitted by both ranks and scored by rank 0, and the choice is the one-process run's."""
    import json
    import subprocess
    import sys

    import pandas as pd

    common = ["--dataset", "tiny", "--variant", variant, "--K", "4", "--steps", "30", "--draws", "5",
              "--psis-draws", "0", "--no-progress", "--no-figures"]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    "-m", "inference.svi", *common, "--out", str(tmp_path / "two")], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "inference.svi", *common, "--out", str(tmp_path / "one")], check=True,
                   capture_output=True)
    two, one = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("two", "one"))
    assert two["variant"] == one["variant"]
    assert two["heldout"]["accuracy"] == pytest.approx(one["heldout"]["accuracy"], abs=2e-3)
    assert two["heldout"]["nll"] == pytest.approx(one["heldout"]["nll"], abs=1e-3)
    p_two, p_one = (pd.read_csv(tmp_path / run / "heldout_pairs.csv").p_same for run in ("two", "one"))
    assert (p_two - p_one).abs().max() < 1e-3
    assert not (tmp_path / "two" / "checkpoint.pt.partial").exists() and (tmp_path / "two" / "checkpoint.pt").exists()


class StopAtStep(svi_trainer.StopSignal):
    """A SIGTERM that this rank's fit loop sees at its ``STEP``-th check, as if sent between two steps."""

    STEP = 6

    @property
    def received(self):
        self.checks = getattr(self, "checks", 0) + 1
        return signal.SIGTERM if self.checks >= self.STEP else None

    @received.setter
    def received(self, value):
        pass


def resumable_rank_main(rank: int, world: int, rendezvous: str, out: str, checkpoint: str, stop_rank: int) -> None:
    torch_distributed.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    if rank == stop_rank:
        svi_trainer.StopSignal = StopAtStep
    try:
        from cen_bayes import CEN

        torch.set_num_threads(1)
        data = CrowdData.from_source(load_dataset("tiny", seed=0).table)
        split = split_by_grid(data, 0.15, seed=0)
        train = split.train_hits.copy()
        train[np.flatnonzero(train)[0]] = False  # an odd number of HITs: shards of unequal size, unequal orders
        split = Split(train_hits=train, test_hits=split.test_hits)
        cen = CEN(K=4, variant="choice", steps=15, batch_hits=30, seed=0, progress=False, draws=5,
                  checkpoint=checkpoint, resume=True, checkpoint_every=4).fit(data, split)
        with cen._own_params():
            params = {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}
        torch.save({"params": params, "interrupted": cen.interrupted_, "losses": cen.fit_result_.losses},
                   f"{out}.{rank}")
    finally:
        torch_distributed.destroy_process_group()


def test_a_stopped_sharded_fit_resumes_to_the_uninterrupted_one(tmp_path):
    """A stop signal on one rank stops every rank at the same step; ``--resume`` continues every shard from
    its own minibatch order and reaches the uninterrupted fit's parameters."""
    def run(name: str, checkpoint: str, stop_rank: int) -> list[dict]:
        mp.start_processes(resumable_rank_main, args=(2, f"file://{tmp_path / name}", str(tmp_path / name),
                                                      str(tmp_path / checkpoint), stop_rank),
                           nprocs=2, start_method="spawn")
        return [torch.load(tmp_path / f"{name}.{rank}", weights_only=False) for rank in range(2)]

    whole = run("whole", "whole.pt", stop_rank=-1)
    stopped = run("stopped", "parts.pt", stop_rank=1)
    assert all(rank["interrupted"] for rank in stopped) and len(stopped[0]["losses"]) == StopAtStep.STEP
    assert (tmp_path / "parts.pt.rank1").exists()  # the second shard's own minibatch order
    resumed = run("resumed", "parts.pt", stop_rank=-1)
    assert not resumed[0]["interrupted"] and resumed[0]["losses"] == whole[0]["losses"]
    for name, value in whole[0]["params"].items():
        assert torch.equal(resumed[0]["params"][name], value), name
