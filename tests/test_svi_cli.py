"""`python -m inference.svi` end to end on a tiny simulated crowd: the output contract."""

import json

import numpy as np
import pandas as pd
import pytest

from inference.report import FIGURES
from inference.svi import main


@pytest.mark.parametrize("variant", ["choice", "kind", "mixture"])
def test_cli_writes_the_output_contract(tmp_path, variant):
    out = tmp_path / variant
    main(["--dataset", "tiny", "--variant", variant, "--K", "4", "--steps", "60", "--draws", "5",
          "--no-progress", "--out", str(out)] + (["--no-figures"] if variant == "mixture" else []))
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["heldout"]["accuracy"] <= 1.0 and np.isfinite(metrics["heldout"]["nll"])
    assert set(metrics["attribute_retrieval"]["per_attribute_accuracy"]) == {"shape", "color", "size"}
    pairs = pd.read_csv(out / "heldout_pairs.csv")
    assert list(pairs.columns) == ["worker_id", "grid_id", "image_i", "image_j", "label", "p_same"]
    assert pairs.p_same.between(0, 1).all() and len(pairs) == metrics["heldout"]["n_pairs"]
    diagnostics = metrics["diagnostics"]
    assert len(diagnostics["elbo_per_pair"]) == len(diagnostics["elbo_step"]) == 60
    assert not np.isnan(diagnostics["psis_khat"]) and diagnostics["psis_draws"] == 200  # inf: a tail too heavy to fit
    assert (diagnostics["warning"] is None) == (diagnostics["psis_khat"] <= 0.7)
    hits = pd.read_csv(out / "hits.csv")
    p = hits.filter(regex=r"^p_(attr_\d+|overall|noise)$").to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    assert ("p_overall" in hits) == (variant == "kind") and ("p_noise" in hits) == (variant != "mixture")
    explained = hits.filter(regex=r"^p_(attr_\d+|overall)$").max(axis=1)  # a sort by kind is no noise
    np.testing.assert_allclose(hits.p_unexplained, 1.0 - explained, atol=1e-9)
    assert hits.uncertain.tolist() == ((hits.p_unexplained > 0.5) | (hits.entropy > np.log(2))).tolist()
    assert (hits.entropy >= 0).all()
    assert set(hits.true_noise) <= {"none", "off_list", "one_group", "random"}
    assert metrics["noisy_hits"]["flagged_share"] == pytest.approx(hits.uncertain.mean())
    assert set(hits.split) == {"train", "test"} and set(pairs.grid_id) == set(hits.grid_id[hits.split == "test"])
    emb = pd.read_csv(out / "embeddings.csv")
    assert list(emb.columns[:3]) == ["image_id", "mean_0", "sd_0"] and (emb.filter(like="sd_") >= 0).all().all()
    assert list(emb.filter(like="true_").columns) == ["true_shape", "true_color", "true_size"]
    assert {p.stem for p in out.glob("*.png")} == (set() if variant == "mixture" else set(FIGURES))


def test_cli_holdout_zero_fits_every_grid(tmp_path, capsys):
    """--holdout-frac 0: every grid trains, nothing is scored, every output but the held-out ones is written."""
    import arviz as az

    out = tmp_path / "all"
    main(["--dataset", "tiny", "--variant", "choice", "--K", "4", "--steps", "40", "--draws", "5", "--psis-draws", "0",
          "--holdout-frac", "0", "--no-progress", "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["heldout"] is None and metrics["n_test_hits"] == 0
    assert "none: every grid was fitted (--holdout-frac 0)" in capsys.readouterr().out
    assert set(pd.read_csv(out / "hits.csv").split) == {"train"} and pd.read_csv(out / "heldout_pairs.csv").empty
    idata = az.from_netcdf(out / "posterior.nc")
    assert "log_likelihood" in idata.groups() and "posterior_predictive" not in idata.groups()
    assert (out / "embeddings.csv").exists() and not (out / "reliability.png").exists()
    main(["--dataset", "tiny", "--method", "siamese", "--K", "4", "--holdout-frac", "0", "--no-progress",
          "--no-figures", "--out", str(tmp_path / "siamese")])  # the baselines too
    assert json.loads((tmp_path / "siamese" / "metrics.json").read_text())["heldout"] is None


def test_cli_default_chooses_the_variant_and_k_on_validation_grids(tmp_path, capsys):
    main(["--dataset", "tiny", "--steps", "40", "--draws", "5", "--psis-draws", "0", "--no-progress",
          "--no-figures", "--out", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    candidates = pd.DataFrame(metrics["selection"])
    assert list(zip(candidates.variant, candidates.K))[:2] == [("choice", 10), ("kind", 10)]  # simplest first
    assert candidates.K[2] == 4 and candidates.variant[2] == metrics["variant"]  # then K for the chosen variant
    assert ((candidates.variant == metrics["variant"]) & (candidates.K == metrics["K"])).any()
    assert np.isfinite(candidates.validation_nll).all() and (candidates.steps == 20).all()  # half of 40
    assert "chosen by validation NLL" in capsys.readouterr().out
    for part in ("both_images_seen", "an_image_unseen"):
        assert "n_pairs" in metrics[f"heldout_{part}"]
    assert sum(metrics[f"heldout_{p}"]["n_pairs"] for p in ("both_images_seen", "an_image_unseen")) == \
        metrics["heldout"]["n_pairs"]


def test_cli_map_needs_a_variant_and_k(tmp_path):
    with pytest.raises(SystemExit):
        main(["--dataset", "tiny", "--map", "--out", str(tmp_path)])


def test_cli_map_paper_loss(tmp_path):
    main(["--dataset", "tiny", "--variant", "worker", "--map", "--K", "4", "--steps", "60",
          "--no-progress", "--no-figures", "--out", str(tmp_path)])
    pairs = pd.read_csv(tmp_path / "heldout_pairs.csv")
    assert pairs.p_same.between(0, 1).all()
    diagnostics = json.loads((tmp_path / "metrics.json").read_text())["diagnostics"]
    assert diagnostics["psis_khat"] is None and diagnostics["warning"] is None  # a point has no spread to check


def test_cli_bad_data_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("worker_id,grid_id,image_id\nw,g,a\n")
    with pytest.raises(SystemExit) as info:
        main(["--data", str(bad), "--out", str(tmp_path / "o")])
    assert "missing column(s) group" in str(info.value) and "\n" not in str(info.value)


def test_cli_baseline_method(tmp_path):
    main(["--dataset", "tiny", "--method", "paper-worker", "--K", "4", "--no-progress", "--no-figures",
          "--out", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["method"] == "paper-worker" and metrics["heldout"]["accuracy"] > metrics["heldout"]["majority_accuracy"]
    assert {"kmeans", "dpgmm"} <= set(metrics["clustering"]) and -1 <= metrics["clustering"]["kmeans"]["mcc"] <= 1
    hits = pd.read_csv(tmp_path / "hits.csv")
    np.testing.assert_allclose(hits.filter(like="p_attr_").sum(axis=1), 1.0)  # the paper's argmax call, one-hot
    assert "uncertain" not in hits  # a hard call has no uncertainty to flag
    emb = pd.read_csv(tmp_path / "embeddings.csv")
    assert list(emb.columns[:3]) == ["image_id", "mean_0", "mean_1"]  # a point estimate: no sd columns
    assert not (tmp_path / "posterior.nc").exists() and not (tmp_path / "model").exists()  # no CEN to save


def test_cli_csn_needs_simulated_truth(tmp_path, capsys):
    data = tmp_path / "mine.csv"
    pd.DataFrame({"worker_id": ["w"] * 3, "grid_id": ["g"] * 3, "image_id": ["a", "b", "c"],
                  "group": [1, 1, 2]}).to_csv(data, index=False)
    with pytest.raises(SystemExit) as info:
        main(["--data", str(data), "--method", "csn", "--out", str(tmp_path / "o")])
    assert "csn is an oracle" in str(info.value) and "\n" not in str(info.value)


def test_a_large_holdout_is_written_as_parquet(tmp_path, monkeypatch):
    """Above PARQUET_ABOVE held-out pairs the table is Parquet (same columns), and the figures still read it."""
    import inference.svi as cli

    monkeypatch.setattr(cli, "PARQUET_ABOVE", 10)
    main(["--dataset", "tiny", "--variant", "choice", "--K", "3", "--steps", "20", "--draws", "5", "--psis-draws", "0",
          "--no-progress", "--out", str(tmp_path)])
    pairs = pd.read_parquet(tmp_path / "heldout_pairs.parquet")
    assert not (tmp_path / "heldout_pairs.csv").exists()
    assert list(pairs.columns) == ["worker_id", "grid_id", "image_i", "image_j", "label", "p_same"]
    assert len(pairs) == json.loads((tmp_path / "metrics.json").read_text())["heldout"]["n_pairs"]
    assert (tmp_path / "reliability.png").exists()
