"""Long fits survive being stopped, runs reproduce, and a diverging fit says so (issue 7)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import SVI

from cen_bayes.atomic import atomic_path, write_text
from cen_bayes.crowd import CrowdData
from cen_bayes.datasets import load_dataset
from cen_bayes.splits import split_by_grid
from inference.fit import fit_svi
from models.svi_trainer import FitDiverged
from inference.svi import main
from models.cen import BayesianCEN

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "inference.svi", "--dataset", "tiny", "--K", "4", "--steps", "200", "--draws", "5",
       "--psis-draws", "0", "--no-figures", "--no-progress"]


@pytest.fixture(scope="module")
def tiny():
    data = CrowdData.from_source(load_dataset("tiny", seed=0).table)
    return data, split_by_grid(data, 0.15, seed=0)


def _fit(tiny, **kwargs):
    data, split = tiny
    pyro.set_rng_seed(0)
    model = BayesianCEN(data, split.train_hits, K=4)
    fit = fit_svi(model, steps=30, batch_hits=16, progress=False, **kwargs)
    return fit, {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}


def _step_hook(monkeypatch, at_call: int, action):
    """Run ``action(loss)`` after the ``at_call``-th SVI step; its return value replaces the loss."""
    original, calls = SVI.step, []

    def step(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        calls.append(1)
        return action(loss) if len(calls) == at_call else loss
    monkeypatch.setattr(SVI, "step", step)


def test_stopped_fit_resumes_to_the_uninterrupted_result(tiny, tmp_path, monkeypatch):
    """Minibatches of HITs, so the epoch permutation and its cursor must survive the stop too."""
    uninterrupted, expected = _fit(tiny)
    checkpoint = tmp_path / "checkpoint.pt"
    with monkeypatch.context() as patch:
        _step_hook(patch, 13, lambda loss: os.kill(os.getpid(), signal.SIGTERM) or loss)
        stopped, _ = _fit(tiny, checkpoint=checkpoint, checkpoint_every=5)
    assert stopped.interrupted and len(stopped.losses) == 13
    assert torch.load(checkpoint, weights_only=False)["step"] == 13
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the fit's handler is gone again
    resumed, params = _fit(tiny, checkpoint=checkpoint, resume=True)
    assert not resumed.interrupted and resumed.losses == uninterrupted.losses
    for name, value in expected.items():
        assert torch.equal(params[name], value), name


def test_nan_elbo_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    checkpoint = tmp_path / "checkpoint.pt"
    _step_hook(monkeypatch, 7, lambda loss: float("nan"))
    with pytest.raises(FitDiverged) as info:
        _fit(tiny, checkpoint=checkpoint, checkpoint_every=5)
    message = str(info.value)
    assert "at step 7" in message and "--lr" in message and str(checkpoint) in message and "\n" not in message
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 5 and all(torch.isfinite(v).all() for v in state["params"].values())


def test_nan_parameter_is_never_saved_as_a_checkpoint(tiny, tmp_path, monkeypatch):
    """A NaN can reach the parameters in the update after the last finite ELBO."""
    checkpoint = tmp_path / "checkpoint.pt"

    def poison(loss):
        with torch.no_grad():
            pyro.get_param_store()["AutoNormal.locs.x"].unconstrained().fill_(float("nan"))
        return loss
    _step_hook(monkeypatch, 10, poison)
    with pytest.raises(FitDiverged, match="parameter became NaN or infinite by step 10"):
        _fit(tiny, checkpoint=checkpoint, checkpoint_every=5)
    assert torch.load(checkpoint, weights_only=False)["step"] == 5


def test_cli_divergence_is_one_line(tmp_path, monkeypatch):
    _step_hook(monkeypatch, 3, lambda loss: float("inf"))
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "tiny", "--K", "4", "--steps", "20", "--no-progress", "--no-figures",
              "--out", str(tmp_path)])
    assert str(info.value).startswith("error: the fit diverged: the ELBO became inf at step 3; try a smaller")
    assert "\n" not in str(info.value)


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    target = write_text(tmp_path / "metrics.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as partial:
            partial.write_text("half of the ne")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def _outputs(run: Path) -> tuple[dict, bytes, bytes]:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("fit_seconds")  # timings: the only numbers allowed to differ
    metrics.pop("selection_seconds", None)
    for candidate in metrics.get("selection", []):
        candidate.pop("seconds")
    return metrics, (run / "heldout_pairs.csv").read_bytes(), (run / "embeddings.csv").read_bytes()


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert _cli("--out", str(out)).returncode == 0
    return out


def test_same_seed_same_files_across_processes(reference_run, tmp_path):
    assert _cli("--out", str(tmp_path)).returncode == 0
    assert _outputs(tmp_path) == _outputs(reference_run)


def test_cli_killed_mid_fit_resumes_to_the_same_files(reference_run, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(CLI + ["--checkpoint-every", "10", "--out", str(run)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"--resume {run}" in stderr and not (run / "metrics.json").exists()
    assert 10 <= torch.load(run / "checkpoint.pt", weights_only=False)["step"] < 200
    resumed = subprocess.run([sys.executable, "-m", "inference.svi", "--resume", str(run), "--no-progress"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and _outputs(run) == _outputs(reference_run)


def test_resume_refuses_new_fit_settings_and_non_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--resume", str(tmp_path)])
    assert "no run.json" in capsys.readouterr().err
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(SystemExit):
        main(["--resume", str(tmp_path), "--steps", "50"])
    assert "drop --steps" in capsys.readouterr().err
