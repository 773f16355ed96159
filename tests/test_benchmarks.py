"""The benchmarks run end to end at tiny sizes, so they cannot rot between full runs."""

import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import ablations, active, diagnostics, learning_curves, limit_gap, real, scale
from cen_bayes.crowd import CrowdData
from benchmarks.runner import ALL_METHODS, code_line, code_version


def test_diagnostics_smoke(tmp_path):
    diagnostics.main(["--smoke", "--datasets", "tiny", "--seeds", "0", "--variants", "choice", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "diagnostics.csv")
    assert len(frame) == 1 and frame.loc[0, "variant"] == "choice"
    assert frame[["psis_khat", "precision", "recall", "uncertain_share"]].notna().all().all()
    assert frame.loc[0, "flagged_one_group"] == 1.0  # a one-group HIT is never explained by one attribute
    assert "noisy HITs" in (tmp_path / "diagnostics.md").read_text()


def test_learning_curves_smoke(tmp_path):
    learning_curves.main(["--smoke", "--datasets", "tiny", "--seeds", "0", "1", "--fractions", "0.5", "1",
                          "--retrieval-dataset", "tiny", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "learning_curves.csv")
    assert set(frame.method) == set(ALL_METHODS) and len(frame) == 2 * 2 * len(ALL_METHODS)
    assert frame[["accuracy", "nll", "ece", "brier", "fit_seconds"]].notna().all().all()
    # nested fractions: half the training grids is fewer HITs, the test side is the same
    hits = frame.groupby(["seed", "fraction"]).n_train_hits.first().unstack()
    assert (hits[0.5] < hits[1.0]).all()
    assert frame.groupby("seed").majority_accuracy.nunique().eq(1).all()
    assert frame.loc[frame.method == "siamese", "retrieval_json"].isna().all()  # attribute-blind
    assert frame.code.nunique() == 1 and frame.code.iloc[0] == code_version()  # which code made the rows
    report = (tmp_path / "learning_curves.md").read_text()
    assert f"code at `{code_version()}`" in report
    assert "## tiny" in report and "paper recipe" in report and "± " in report
    assert "cen-choice" in (tmp_path / "retrieval.md").read_text()
    assert (tmp_path / "learning_curves.png").stat().st_size > 0 and (tmp_path / "retrieval.png").exists()
    # --resume finds every job done and refits nothing
    before = (tmp_path / "learning_curves.csv").read_text()
    learning_curves.main(["--smoke", "--datasets", "tiny", "--seeds", "0", "1", "--fractions", "0.5", "1",
                          "--retrieval-dataset", "tiny", "--resume", "--out", str(tmp_path)])
    assert pd.read_csv(tmp_path / "learning_curves.csv").equals(pd.read_csv(pd.io.common.StringIO(before)))
    # --report-only redraws the same report from the CSV alone
    report = (tmp_path / "learning_curves.md").read_text()
    (tmp_path / "learning_curves.md").unlink()
    learning_curves.main(["--report-only", "--retrieval-dataset", "tiny", "--out", str(tmp_path)])
    assert (tmp_path / "learning_curves.md").read_text() == report


def test_ablations_smoke(tmp_path):
    ablations.main(["--smoke", "--seeds", "0", "--jobs", "1", "--out", str(tmp_path)])
    gamma = pd.read_csv(tmp_path / "gamma.csv")
    assert sorted(gamma.gamma.unique()) == [1.0, 5.0] and set(gamma.method) == set(ablations.GAMMA_METHODS)
    assert "γ = 1" in (tmp_path / "gamma.md").read_text()
    sizes = ablations.dim_shares(pd.read_csv(tmp_path / "embedding_size.csv"))
    assert sorted(sizes.K.unique()) == [3, 6]
    assert all(len(s) == k and abs(s.sum() - 1) < 1e-6 for s, k in zip(sizes.shares, sizes.K))
    assert (sizes.dims_90 <= sizes.K).all() and (sizes.effective_dims <= sizes.K + 1e-9).all()
    assert (tmp_path / "embedding_size.png").exists()


def test_active_smoke(tmp_path):
    """The active-learning loop on tiny: both strategies, rounds of new grids answered by the simulated crowd."""
    active.main(["--smoke", "--jobs", "1", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "active.csv")
    assert set(frame.strategy) == {"info", "random"} and sorted(frame["round"].unique()) == [0, 1, 2]
    hits = frame.pivot_table(index="round", columns="strategy", values="n_train_hits")
    assert (hits.diff().dropna() == 4).all().all()  # a batch of 4 new grids a round, each answered once
    assert frame[["accuracy", "nll", "retrieval", "fit_seconds"]].notna().all().all()
    assert frame.code.nunique() == 1 and frame.code.iloc[0] == code_version()
    report = (tmp_path / "active.md").read_text()
    assert "## tiny" in report and "Δ acc" in report and (tmp_path / "active.png").stat().st_size > 0
    active.main(["--report-only", "--jobs", "1", "--out", str(tmp_path)])
    assert (tmp_path / "active.md").read_text() == report


def test_scale_smoke(tmp_path):
    scale.main(["--smoke", "--methods", "cen-choice", "siamese", "paper-cen", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "speed.csv")
    assert list(frame.dataset.unique()) == ["tiny"] and len(frame) == 3
    assert (frame.peak_rss_mb > 50).all() and (frame.fit_seconds > 0).all()
    report = (tmp_path / "speed.md").read_text()
    assert "× recipe" in report and "| paper-cen " in report and "1.00" in report
    assert "K-means MCC" in (tmp_path / "clustering.md").read_text()


def test_real_smoke(tmp_path):
    """The real-data benchmark on its simulated stand-in: every method, the references, the merges."""
    real.main(["--smoke", "--seeds", "0", "--jobs", "1", "--methods", "cen-choice", "map-mixture", "bcc",
               "paper-cen", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "real.csv")
    assert set(frame.method) == {"cen-choice", "map-mixture", "bcc", "paper-cen"}
    assert frame[["accuracy", "nll", "ece", "kmeans_mcc", "kmeans_nmi", "accuracy_seen_pairs",
                  "ece_unseen_pairs"]].notna().all().all()
    merges = json.loads(frame.loc[frame.method == "cen-choice", "merges_json"].item())
    assert merges and all(0 <= m[4] <= 1 and m[5] <= m[4] <= m[6] for m in merges)  # mean inside its interval
    assert frame.loc[frame.method != "cen-choice", "merges_json"].isna().all()
    report = (tmp_path / "real.md").read_text()
    for reference in real.REFERENCE_NAMES:
        assert f"| {reference}" in report
    assert "of the way from always 'different'" in report and "people merge" in report


def test_real_says_where_it_looked_when_the_data_are_absent(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        real.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert "real crowd data not found" in str(stop.value) and "nowhere" in str(stop.value)
    assert not (tmp_path / "real.csv").exists()


def test_real_references_score_the_oracles():
    data = CrowdData.from_table(pd.DataFrame({
        "worker_id": ["a"] * 4 + ["b"] * 4 + ["c"] * 4, "grid_id": ["g1"] * 4 + ["g2"] * 4 + ["g3"] * 4,
        "image_id": [1, 2, 3, 4] * 3, "group": [0, 0, 1, 1] * 3}))
    category = np.array(["x", "x", "y", "y"])  # people sort exactly by category
    rows = {r["method"]: r for r in real.references(data, category, seed=0)}
    assert rows["same-category oracle (rule)"]["accuracy"] == 1.0
    assert rows["always different"]["accuracy"] == pytest.approx(4 / 6)
    assert rows["same-category oracle (calibrated)"]["nll"] < 1e-6


def test_code_line_names_every_version_of_a_mixed_table():
    assert code_version() != "unknown"  # the tests run in a git checkout
    frame = pd.DataFrame({"code": ["abc1234", "abc1234", "def5678-dirty", None]})
    assert code_line(frame) == "code at `abc1234` (2 rows), `def5678-dirty` (1 rows), not recorded (1 rows)"
    assert code_line(frame.iloc[:2]) == "code at `abc1234`"
    assert code_line(pd.DataFrame({"x": [1]})) == "code version not recorded"


def test_tables_leave_out_seeds_not_every_method_has_finished():
    rows = ([("retina", 1.0, seed, method) for seed in (0, 1) for method in ("a", "b")]
            + [("birds", 1.0, 0, "a"), ("birds", 1.0, 0, "b"), ("birds", 1.0, 1, "a")]
            + [("celeba", 1.0, 0, "a")]  # celeba run with one method (--methods): nothing pending
            + [("retina", 0.3, 0, "a")])  # a fraction run with fewer methods: shown with what it has
    frame = pd.DataFrame(rows, columns=["dataset", "fraction", "seed", "method"])
    complete, pending = learning_curves.complete_seeds(frame)
    assert len(complete) == 8 and set(complete.dataset) == {"retina", "birds", "celeba"}
    assert pending.to_dict("records") == [{"dataset": "birds", "fraction": 1.0, "seed": 1, "method": "a"}]


def test_limit_gap_smoke(tmp_path):
    limit_gap.main(["--smoke", "--datasets", "tiny", "--seeds", "0", "--grids", "1", "2", "--jobs", "1",
                    "--methods", "cen-choice", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "limit_gap.csv")
    assert sorted(frame.grids.unique()) == [1.0, 2.0] and set(frame.method) == {"limit", "cen-choice"}
    hits = frame.groupby("grids").n_train_hits.first()
    assert hits[2.0] > 1.5 * hits[1.0]  # twice the grids, about twice the training HITs
    gap = limit_gap.gaps(frame)
    assert len(gap) == 2 and ((gap.accuracy_limit - gap.accuracy - gap.acc_gap).abs() < 1e-9).all()
    assert "acc gap" in (tmp_path / "limit_gap.md").read_text() and (tmp_path / "limit_gap.png").exists()


def test_scale_pairs_smoke(tmp_path):
    scale.main(["--pairs", "2e3", "--processes", "1", "2", "--threads", "2", "--out", str(tmp_path),
                "--cli", "--steps", "20", "--draws", "5", "--psis-draws", "0"])
    frame = pd.read_csv(tmp_path / "scale_pairs.csv")
    assert sorted(frame.processes) == [1, 2] and (frame.pairs > 5000).all()
    assert (frame.peak_rss_mb > 50).all() and (frame.wall_seconds > frame.fit_seconds).all()
    assert frame.accuracy.between(0, 1).all() and (frame.epochs == 20).all()  # full batch: a step is an epoch
    assert "torchrun" in (tmp_path / "scale_pairs.md").read_text() and (tmp_path / "scale_pairs.png").exists()


def test_scale_schedules_smoke(tmp_path):
    scale.main(["--schedules", "--smoke", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "scale_schedule.csv")
    assert list(frame.schedule) == ["full", "default"] and frame.accuracy.between(0, 1).all()
    assert frame.batch_hits.isna().all() and (frame.epochs == 20).all()  # tiny is below the minibatch threshold
    assert "default_batch_hits" in (tmp_path / "scale_schedule.md").read_text()
