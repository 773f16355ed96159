"""The benchmarks run end to end at tiny sizes, so they cannot rot between full runs."""

import pandas as pd

from benchmarks import cen_fit


def test_cen_fit_smoke(tmp_path):
    cen_fit.main(["--smoke", "--datasets", "tiny", "--no-birds", "--out", str(tmp_path)])
    frame = pd.read_csv(tmp_path / "cen_fit.csv")
    expected = {f"cen-{v}" for v in cen_fit.BAYES} | {"map-mixture"} | {f"paper-{v}" for v in cen_fit.PAPER}
    assert set(frame.method) == expected
    assert frame[["accuracy", "nll", "ece", "brier", "fit_seconds"]].notna().all().all()
    assert frame.accuracy.between(0, 1).all() and (frame.fit_seconds > 0).all()
    report = (tmp_path / "cen_fit.md").read_text()
    assert "## tiny" in report and "MAP (paper's loss)" in report
