"""posterior.nc: users open it with ArviZ and get summaries, forest plots and LOO by their own ids."""

import json

import arviz as az
import matplotlib
import numpy as np
import pandas as pd
import pytest

from inference.svi import main

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    main(["--dataset", "tiny", "--K", "3", "--steps", "60", "--draws", "20", "--no-progress", "--no-figures",
         "--out", str(out)])
    return out


def test_posterior_opens_with_named_dims(run_dir):
    idata = az.from_netcdf(run_dir / "posterior.nc")
    assert {"posterior", "log_likelihood", "posterior_predictive", "observed_data"} <= set(idata.groups())
    post = idata.posterior
    # SVI's independent draws are one chain, not pseudo-chains for r-hat (inference.arviz_export)
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == 20
    for group in ("log_likelihood", "posterior_predictive"):
        assert idata[group].sizes["chain"] == 1 and idata[group].sizes["draw"] == 20
    hits = pd.read_csv(run_dir / "hits.csv")
    emb = pd.read_csv(run_dir / "embeddings.csv")
    assert list(post["x"].dims) == ["chain", "draw", "image", "attribute"]
    assert list(post.coords["image"].values) == list(emb.image_id)
    assert set(post.coords["worker"].values) == set(hits.worker_id)
    assert list(post["attribute_used"].dims[2:]) == ["hit", "attribute_or_noise"]
    # the per-draw attribute probabilities average to hits.csv
    np.testing.assert_allclose(post["attribute_used"].mean(("chain", "draw")).values,
                               hits.filter(regex=r"^p_(attr_\d+|noise)$").to_numpy(), atol=1e-5)
    np.testing.assert_allclose(post["worker_share"].sum("attribute").values, 1.0, rtol=1e-5)
    pairs = pd.read_csv(run_dir / "heldout_pairs.csv")
    np.testing.assert_array_equal(idata.observed_data["label"].values, pairs.label.to_numpy())
    assert idata.posterior_predictive["label"].shape[-1] == len(pairs)
    assert idata.log_likelihood["labels"].sizes["train_hit"] == (hits.split == "train").sum()


def test_summary_forest_and_loo_work(run_dir):
    idata = az.from_netcdf(run_dir / "posterior.nc")
    summary = az.summary(idata, var_names=["a_w", "worker_share"], kind="stats")
    assert len(summary) == idata.posterior.sizes["worker"] * 3 * 2 and summary.notna().all().all()
    assert "r_hat" not in summary  # the README's call: no chain diagnostics for VI draws
    axes = az.plot_forest(idata, var_names=["worker_share"], combined=True)
    assert len(np.ravel(axes)) >= 1
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo) and loo.elpd_loo < 0


def test_map_run_writes_a_point_posterior(tmp_path):
    main(["--dataset", "tiny", "--variant", "worker", "--map", "--K", "3", "--steps", "20", "--no-progress",
          "--no-figures", "--out", str(tmp_path)])
    idata = az.from_netcdf(tmp_path / "posterior.nc")
    assert idata.posterior.sizes["chain"] == 1 and idata.posterior.sizes["draw"] == 1
    assert "log_likelihood" not in idata.groups()
    assert json.loads((tmp_path / "metrics.json").read_text())["map"] is True


@pytest.mark.parametrize("variant", ["choice", "worker"])
def test_a_subsample_of_hits_gets_the_same_log_likelihood(variant):
    """Large crowds export the log-likelihood of a subsample of training HITs (``--loo-hits``): each
    subsampled HIT's column is the one the full computation gives it."""
    import torch

    from cen_bayes import CEN
    from cen_bayes.datasets import load_dataset
    from inference.predict import train_hit_log_likelihood

    cen = CEN(K=3, variant=variant, steps=20, draws=3, progress=False).fit(load_dataset("tiny", seed=0).table,
                                                                         holdout=0.2)
    hits = torch.tensor([40, 3, 17, 88])
    with cen._own_params():
        full = train_hit_log_likelihood(cen.model_, cen.draws_)
        part = train_hit_log_likelihood(cen.model_, cen.draws_, hits)
    np.testing.assert_allclose(part, full[:, hits.numpy()], rtol=1e-5)


def test_loo_and_predictive_hits_subsample_the_export(tmp_path):
    """``--loo-hits`` and ``--predictive-hits`` keep a sample of HITs in posterior.nc; the predictive draws'
    pairs are named by their rows in heldout_pairs.csv, and their mean is that table's P(same)."""
    main(["--dataset", "tiny", "--variant", "choice", "--K", "3", "--steps", "20", "--draws", "5", "--loo-hits", "30",
          "--predictive-hits", "7", "--psis-draws", "0", "--no-progress", "--no-figures", "--out", str(tmp_path)])
    idata = az.from_netcdf(tmp_path / "posterior.nc")
    names = idata.log_likelihood.coords["train_hit"].values
    hits = pd.read_csv(tmp_path / "hits.csv")
    train = (hits.worker_id.astype(str) + "|" + hits.grid_id.astype(str))[hits.split == "train"]
    assert len(names) == 30 and set(names) <= set(train) and len(set(names)) == 30
    assert np.isfinite(az.loo(idata).elpd_loo)
    held = pd.read_csv(tmp_path / "heldout_pairs.csv")
    rows = idata.posterior_predictive.coords["heldout_pair"].values
    assert 0 < len(rows) < len(held) and len(held.iloc[rows].groupby(["worker_id", "grid_id"])) == 7
    np.testing.assert_array_equal(idata.observed_data["label"].values, held.label.to_numpy()[rows])
    assert set(np.unique(idata.posterior_predictive["label"].values)) <= {0, 1}
