"""The benchmarks run end to end at tiny sizes, so they cannot rot between full runs."""

import pandas as pd

from benchmarks import cen_fit, diagnostics, methods
from models.methods import METHODS


def test_cen_fit_smoke(tmp_path):
    cen_fit.main(["--smoke", "--datasets", "tiny", "--no-birds", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "cen_fit.csv")
    expected = {f"cen-{v}" for v in cen_fit.BAYES} | {"map-mixture"} | {f"paper-{v}" for v in cen_fit.PAPER}
    assert set(frame.method) == expected
    assert frame[["accuracy", "nll", "ece", "brier", "fit_seconds"]].notna().all().all()
    assert frame.accuracy.between(0, 1).all() and (frame.fit_seconds > 0).all()
    report = (tmp_path / "cen_fit.md").read_text()
    assert "## tiny" in report and "MAP (paper's loss)" in report


def test_diagnostics_smoke(tmp_path):
    diagnostics.main(["--smoke", "--datasets", "tiny", "--seeds", "0", "--variants", "choice", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "diagnostics.csv")
    assert len(frame) == 1 and frame.loc[0, "variant"] == "choice"
    assert frame[["psis_khat", "precision", "recall", "uncertain_share"]].notna().all().all()
    assert frame.loc[0, "flagged_one_group"] == 1.0  # a one-group HIT is never explained by one attribute
    assert "noisy HITs" in (tmp_path / "diagnostics.md").read_text()


def test_methods_smoke(tmp_path):
    methods.main(["--smoke", "--datasets", "tiny", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "methods.csv")
    assert list(frame.method) == list(METHODS)
    assert frame[["accuracy", "nll", "kmeans_mcc", "fit_seconds"]].notna().all().all()
    assert frame.loc[frame.method == "siamese", "retrieval_mean"].isna().all()  # attribute-blind
    assert "## tiny" in (tmp_path / "methods.md").read_text()
