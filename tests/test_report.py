"""`inference.report`: figures from a fit's output folder, with and without ground truth."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from inference import report
from inference.svi import main as fit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL = {"elbo", "worker_activations", "attribute_axes", "tsne", "attribute_retrieval", "reliability",
       "hit_uncertainty"}
FAST = ["--dataset", "tiny", "--K", "4", "--steps", "60", "--draws", "10", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def svi_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("svi")
    fit([*FAST, "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def map_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("map")
    fit([*FAST, "--variant", "worker", "--map", "--out", str(out)])
    return out


def assert_pngs(paths, names):
    assert {p.stem for p in paths} == names
    for path in paths:
        assert path.suffix == ".png" and path.stat().st_size > 5000
        assert path.read_bytes()[:8] == PNG_MAGIC


def without_truth(run, dest):
    """A copy of ``run`` as a fit on real data would leave it: no true_* columns, no retrieval scores."""
    shutil.copytree(run, dest)
    for name in ["hits.csv", "embeddings.csv"]:
        table = pd.read_csv(dest / name)
        table.drop(columns=[c for c in table if c.startswith("true_")]).to_csv(dest / name, index=False)
    metrics = json.loads((dest / "metrics.json").read_text())
    metrics.pop("attribute_retrieval")
    (dest / "metrics.json").write_text(json.dumps(metrics))
    return dest


def test_all_figures_with_truth(svi_run, tmp_path):
    written = report.write_report(svi_run, out=tmp_path / "figs")
    assert all(p.parent == tmp_path / "figs" for p in written)
    assert_pngs(written, ALL)
    assert "90% credible interval" in report.attribute_axes(report.load_run(svi_run))._suptitle.get_text()


def test_without_truth_skips_only_what_needs_it(svi_run, tmp_path, capsys):
    run = without_truth(svi_run, tmp_path / "real")
    written = report.write_report(run)
    assert_pngs(written, ALL - {"attribute_retrieval"})
    assert "skipped attribute_retrieval.png" in capsys.readouterr().out
    tsne = report.tsne(report.load_run(run))
    assert len(tsne.axes) == 1  # one uncoloured panel, not one per attribute


def test_missing_diagnostics_skips_elbo(svi_run, tmp_path, capsys):
    run = shutil.copytree(svi_run, tmp_path / "old")
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["diagnostics"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert_pngs(report.write_report(run), ALL - {"elbo"})
    assert "skipped elbo.png" in capsys.readouterr().out


def test_worker_shares_are_a_distribution_per_worker(svi_run):
    fig = report.worker_activations(report.load_run(svi_run))
    share = np.asarray(fig.axes[0].images[0].get_array())
    width = np.asarray(fig.axes[1].images[0].get_array())
    np.testing.assert_allclose(share.sum(1), 1.0, rtol=1e-5)
    assert (width > 0).any() and (width >= 0).all()  # 10 draws give intervals of nonzero width
    assert list(share.argmax(1)) == sorted(share.argmax(1))  # workers sorted by dominant dim


def test_map_run_has_no_intervals(map_run, tmp_path):
    run = report.load_run(map_run)
    assert "no intervals" in report.attribute_axes(run)._suptitle.get_text()
    width = np.asarray(report.worker_activations(run).axes[1].images[0].get_array())
    assert (width == 0).all()
    assert_pngs(report.write_report(map_run, out=tmp_path), ALL)


def test_cli(svi_run, tmp_path, capsys):
    report.main([str(svi_run), "--out", str(tmp_path)])
    assert capsys.readouterr().out.count("wrote ") == len(ALL)
    assert_pngs(sorted(tmp_path.glob("*.png")), ALL)
