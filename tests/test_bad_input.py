"""Bad input, end to end (issue 7): every malformed table stops with one line, odd but
legitimate submissions are kept and counted, unseen workers get the population prior.

The CLI cases run in-process through ``main`` (an uncaught exception fails the test);
a few also run as ``python -m inference.svi`` subprocesses to check what a user sees:
a non-zero exit, one line on stderr, no traceback. Each subprocess costs a full
torch/pyro import, so only one case per source of error runs that way.
"""

import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cen_bayes.annotations import AnnotationError, read_annotations
from cen_bayes.crowd import CrowdData, odd_hit_counts
from cen_bayes.splits import split_by_grid, unseen_worker_hits
from inference.evaluate import fit_and_evaluate
from inference.predict import unseen_worker_prior
from models.cen import CrowdPriors, PaperPriors
from inference.svi import main

ROOT = Path(__file__).resolve().parents[1]
HEADER = "worker_id,grid_id,image_id,group\n"
GOOD = HEADER + "w1,g1,a,x\nw1,g1,b,x\nw1,g1,c,y\nw1,g2,a,x\nw1,g2,d,y\n"
TINY_FIT = ["--K", "2", "--steps", "20", "--draws", "10", "--psis-draws", "25", "--no-figures", "--no-progress"]


def write_parquet(path, frame):
    frame.to_parquet(path)
    return path


# name -> (writer of the bad file in a folder, a piece the one-line message must contain)
BAD_FILES = {
    "misspelt column": (lambda d: (d / "a.csv").write_text(GOOD.replace("image_id", "imge_id")),
                        "a.csv: missing column(s) image_id (found: worker_id, grid_id, imge_id, group); "
                        "did you mean 'imge_id' for image_id?"),
    "empty id": (lambda d: (d / "a.csv").write_text(GOOD + "w1,g3,,x\n"), "a.csv line 7, column image_id: missing value"),
    "blank id": (lambda d: (d / "a.csv").write_text(GOOD + "  ,g3,a,x\n"), "a.csv line 7, column worker_id: missing value"),
    "NaN group": (lambda d: (d / "a.csv").write_text(GOOD + "w1,g3,a,NaN\n"), "a.csv line 7, column group: missing value"),
    "one-image HIT": (lambda d: (d / "a.csv").write_text(GOOD + "w2,g1,a,x\n"),
                      "a.csv line 7: the HIT of worker w2 on grid g1 has only one image"),
    "image twice": (lambda d: (d / "a.csv").write_text(GOOD + "w1,g1,b,y\n"),
                    "a.csv lines 3 and 7: image b appears twice in the HIT of worker w1 on grid g1"),
    "non-UTF-8": (lambda d: (d / "a.csv").write_bytes(GOOD.encode() + "w1,g3,caf\u00e9,x\n".encode("latin-1")),
                  "a.csv line 7: byte 0xe9 at offset"),
    "empty file": (lambda d: (d / "a.csv").write_text(""), "a.csv: file is empty"),
    "blank lines only": (lambda d: (d / "a.csv").write_text("\n\n"), "a.csv: file is empty"),
    "header only": (lambda d: (d / "a.csv").write_text(HEADER), "a.csv: no annotation rows"),
    "row too long": (lambda d: (d / "a.csv").write_text(HEADER + "w1,g1,a,x,oops\nw1,g1,b,x\n"),
                     "a.csv: the first data row has more fields than the header has columns"),
    "ragged row": (lambda d: (d / "a.csv").write_text(GOOD + "w1,g3,a,x,oops\n"), "line 7, saw 5"),
    "parquet missing column": (
        lambda d: write_parquet(d / "a.parquet", pd.read_csv(io.StringIO(GOOD)).rename(columns={"group": "grp"})),
        "a.parquet: missing column(s) group (found: worker_id, grid_id, image_id, grp); did you mean 'grp' for group?"),
    "parquet list id": (
        lambda d: write_parquet(d / "a.parquet", pd.DataFrame({"worker_id": ["w", "w"], "grid_id": [[1, 2], [3]],
                                                               "image_id": ["a", "b"], "group": [1, 2]})),
        "a.parquet row 0, column grid_id: array([1, 2]) is a nested value (ndarray)"),
    "not parquet": (lambda d: (d / "a.parquet").write_bytes(b"PAR1 but not really"), "a.parquet: cannot read file"),
    "no such file": (lambda d: None, "a.csv: no such file"),
    "one grid only": (lambda d: (d / "a.csv").write_text(HEADER + "w1,g1,a,x\nw1,g1,b,y\nw2,g1,a,x\nw2,g1,b,x\n"),
                      "a.csv: no held-out grid to score (1 grid(s)"),
}


def bad_file(case, folder: Path) -> Path:
    BAD_FILES[case][0](folder)
    parquet = folder / "a.parquet"
    return parquet if parquet.exists() else folder / "a.csv"


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_cli_bad_file_is_one_line(tmp_path, case):
    path = bad_file(case, tmp_path)
    with pytest.raises(SystemExit) as info:  # anything else would reach the user as a traceback
        main(["--data", str(path), "--out", str(tmp_path / "out")] + TINY_FIT)
    message = info.value.code
    assert isinstance(message, str), "a string exit code prints one line and exits with status 1"
    assert message.startswith("error: ") and "\n" not in message
    assert BAD_FILES[case][1] in message
    assert not (tmp_path / "out").exists()  # failed before writing anything


@pytest.mark.parametrize("case", ["misspelt column", "non-UTF-8", "parquet list id", "one grid only"])
def test_cli_subprocess_shows_one_line_and_no_traceback(tmp_path, case):
    path = bad_file(case, tmp_path)
    run = subprocess.run([sys.executable, "-m", "inference.svi", "--data", str(path), "--out", str(tmp_path / "o")]
                         + TINY_FIT, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and BAD_FILES[case][1] in run.stderr


def test_bad_argument_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "tiny", "--holdout-frac", "1.5"])
    assert info.value.code == 2 and "--holdout-frac: must be in [0, 1), got 1.5" in capsys.readouterr().err


# ----- ids whose Python type is ambiguous (DataFrames passed in; CSV ids are always text) ----------
def frame(**columns):
    base = {"worker_id": ["w1"] * 3, "grid_id": ["g"] * 3, "image_id": ["a", "b", "c"], "group": [1, 1, 2]}
    return pd.DataFrame({**base, **columns})


@pytest.mark.parametrize("columns, expected", [
    ({"worker_id": [7, "7", 7]}, "row 1, column worker_id: '7' is text but 7 (row 0) is number"),
    ({"worker_id": [True, 1, 1]}, "row 1, column worker_id: 1 is number but True (row 0) is boolean"),
    ({"grid_id": ["g", "g", b"g"]}, "row 2, column grid_id: b'g' is bytes but 'g' (row 0) is text"),
    ({"image_id": ["a", ("b",), "c"]}, "row 1, column image_id: ('b',) is a nested value (tuple)"),
    ({"group": [1, "1", 2]}, "row 1, column group: '1' is text but 1 (row 0) is number"),
])
def test_mixed_id_types_are_an_error(columns, expected):
    with pytest.raises(AnnotationError) as info:
        read_annotations(frame(**columns))
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("columns", [
    {"worker_id": [7, 7.0, 7]},  # ints and floats: one id
    {"worker_id": [None, "w", "w"], "grid_id": ["g"] * 3},  # NaN is reported as missing, not as a type mix
    {"worker_id": pd.Categorical(["a", "a", "a"])},
])
def test_unambiguous_id_types(columns):
    if columns["worker_id"][0] is None:
        with pytest.raises(AnnotationError, match="row 0, column worker_id: missing value"):
            read_annotations(frame(**columns))
    else:
        assert CrowdData.from_source(frame(**columns)).n_workers == 1


def test_csv_ids_are_text(tmp_path):
    """'7' and '7.0' in a CSV are two workers, as '007' and '7' are: ids are compared as written."""
    path = tmp_path / "a.csv"
    path.write_text(HEADER + "7,g1,a,x\n7,g1,b,x\n7.0,g1,a,x\n7.0,g1,b,y\n")
    assert list(CrowdData.from_source(path).workers) == ["7", "7.0"]


def test_duplicate_required_column():
    table = pd.concat([frame(), frame()[["group"]]], axis=1)
    with pytest.raises(AnnotationError, match="column group appears more than once"):
        read_annotations(table)


# ----- odd but legitimate submissions, unseen workers ----------------------------------------------
def odd_table() -> pd.DataFrame:
    """Five grids, each sorted by the common worker w and by a worker seen on that grid only
    (so whichever grid is held out, one held-out HIT has an unseen worker); u0 puts every image in
    one group, u1 every image alone."""
    rows = []
    for g in range(5):
        images = [f"i{g}", f"i{g + 1}", f"i{g + 2}", f"i{g + 3}"]
        rows += [("w", f"g{g}", im, ["x", "x", "y", "y"][k]) for k, im in enumerate(images)]
        groups = {0: ["a"] * 4, 1: ["a", "b", "c", "d"]}.get(g, ["a", "a", "a", "b"])
        rows += [(f"u{g}", f"g{g}", im, groups[k]) for k, im in enumerate(images)]
    return pd.DataFrame(rows, columns=["worker_id", "grid_id", "image_id", "group"])


def test_odd_hit_counts_match_brute_force():
    data = CrowdData.from_source(odd_table())
    n_groups = data.table.groupby("hit")["group"].nunique()
    assert odd_hit_counts(data) == {"n_one_group_hits": int((n_groups == 1).sum()),
                                    "n_all_singleton_hits": int((n_groups == data.hits.n_images).sum())}
    assert odd_hit_counts(data) == {"n_one_group_hits": 1, "n_all_singleton_hits": 1}


def test_cli_keeps_and_reports_odd_hits_and_unseen_workers(tmp_path, capsys):
    path = tmp_path / "odd.csv"
    odd_table().to_csv(path, index=False)
    main(["--data", str(path), "--out", str(tmp_path / "out")] + TINY_FIT)
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (metrics["n_one_group_hits"], metrics["n_all_singleton_hits"]) == (1, 1)
    assert metrics["n_train_hits"] + metrics["n_test_hits"] == 10  # nothing dropped
    assert "kept as crowd noise: 1 HITs with every image in one group, 1 with every image alone" in printed
    assert re.search(r"odd HITs \(kept\) +1 every image in one group, 1 every image alone", printed)
    assert metrics["n_test_hits_unseen_worker"] == 1
    assert ("1 held-out HITs are by workers unseen in training: their worker activation is drawn from the "
            "population prior") in printed
    pairs = pd.read_csv(tmp_path / "out" / "heldout_pairs.csv")
    unseen = pairs[pairs.worker_id.str.startswith("u")]
    assert len(unseen) == 6 and unseen.p_same.between(0, 1).all()


@pytest.mark.parametrize("variant, map_mode", [("choice", False), ("mixture", False), ("worker", True)])
def test_unseen_worker_predictions_are_finite(variant, map_mode):
    data = CrowdData.from_source(odd_table())
    split = split_by_grid(data, 0.2, seed=0)
    assert unseen_worker_hits(data, split).sum() == 1
    result = fit_and_evaluate(data, split, variant=variant, K=2, map_mode=map_mode, steps=5, draws=4,
                              progress=False, psis_draws=0)
    assert np.isfinite(result.p_same).all() and ((result.p_same >= 0) & (result.p_same <= 1)).all()
    assert np.isfinite(result.p_attr).all()


def test_unseen_worker_prior_replaces_only_unseen_workers():
    model = type("M", (), {"priors": CrowdPriors()})()
    seen = torch.tensor([True, False, True])
    latent = {"a_w": torch.full((3, 2), 5.0), "eps": torch.tensor(0.1), "tau": torch.tensor([1.0, 2.0]),
              "alpha": torch.tensor(1.0)}
    drawn = unseen_worker_prior(model, latent, seen, point=False)
    assert torch.equal(drawn["a_w"][seen], latent["a_w"][seen])
    assert not torch.equal(drawn["a_w"][1], latent["a_w"][1]) and (drawn["a_w"][1] > 0).all()
    assert drawn["eps"] is latent["eps"]  # the crowd's noise share is everyone's, new workers' too
    point = unseen_worker_prior(model, latent, seen, point=True)  # MAP: the prior mean τ
    assert torch.equal(point["a_w"][1], latent["tau"])
    model.priors = PaperPriors()  # the paper's flat penalty: the training workers' mean
    assert torch.equal(unseen_worker_prior(model, latent, seen, point=True)["a_w"][1], torch.full((2,), 5.0))


# ----- property-based: random tables give a clean error or correct pairs, never a crash ---------------
@st.composite
def annotation_tables(draw, flaws=True):
    """Random small tables: HITs of random workers, grids, image subsets and groups; a HIT may repeat
    a (worker, grid) (its images merge, maybe twice) or have one image; then maybe one flaw.
    ``flaws=False``: valid tables, each HIT on its own grid."""
    rows = []
    for hit in range(draw(st.integers(1 if flaws else 2, 6))):  # unflawed: >= 2 grids, so one can be held out
        worker = draw(st.integers(0, 3))
        grid = draw(st.integers(0, 3)) if flaws else hit
        images = draw(st.lists(st.integers(0, 7), min_size=1 if flaws else 2, max_size=5, unique=True))
        groups = draw(st.lists(st.integers(0, 3), min_size=len(images), max_size=len(images)))
        rows += [[f"w{worker}", f"g{grid}", f"i{image}", group] for image, group in zip(images, groups)]
    table = pd.DataFrame(rows, columns=["worker_id", "grid_id", "image_id", "group"], dtype=object)
    flaw = draw(st.sampled_from(["none"] * 4 + ["nan", "blank", "int", "list", "number ids"])) if flaws else "none"
    row = draw(st.integers(0, len(table) - 1))
    column = draw(st.sampled_from(list(table.columns)))
    if flaw == "nan":
        table.at[row, column] = np.nan
    elif flaw == "blank":
        table.at[row, column] = " "
    elif flaw == "int":
        table.at[row, column] = 3 if column != "group" else "3"
    elif flaw == "list":
        table.at[row, column] = [1, 2]
    elif flaw == "number ids":  # a whole column of numbers is fine
        table[column] = table[column].astype(str).str.strip("wgi").astype(int)
    return table


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(annotation_tables())
def test_random_tables_give_clean_errors_or_all_pairs(table):
    try:
        data = CrowdData.from_source(table)
    except AnnotationError as err:
        assert "\n" not in str(err) and str(err).startswith("annotation table")
        return
    size = table.groupby(["worker_id", "grid_id"]).size().to_numpy()
    assert len(data.pairs) == int((size * size - size).sum() // 2) and data.n_hits == len(size)
    assert bool((data.pairs.i != data.pairs.j).all())
    n_groups = data.table.groupby("hit")["group"].nunique().sort_index().to_numpy()
    n_images = data.hits.n_images.to_numpy()
    assert odd_hit_counts(data) == {"n_one_group_hits": int((n_groups == 1).sum()),
                                    "n_all_singleton_hits": int((n_groups == n_images).sum())}


def test_random_tables_fit_through_the_cli_or_stop_cleanly():
    fitted = []

    @settings(max_examples=5, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(annotation_tables(flaws=False), st.sampled_from(["choice", "mixture"]))
    def fit_or_stop(table, variant):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "random.csv"
            table.to_csv(path, index=False)
            try:
                main(["--data", str(path), "--out", str(Path(folder) / "out"), "--variant", variant, "--K", "2",
                      "--steps", "5", "--draws", "3", "--psis-draws", "25", "--no-figures", "--no-progress"])
            except SystemExit as stop:
                assert isinstance(stop.code, str) and "\n" not in stop.code
                return
            metrics = json.loads((Path(folder) / "out" / "metrics.json").read_text())
            pairs = pd.read_csv(Path(folder) / "out" / "heldout_pairs.csv")
            assert np.isfinite(pairs.p_same).all() and pairs.p_same.between(0, 1).all()
            assert np.isfinite(metrics["heldout"]["nll"])
            fitted.append(variant)

    fit_or_stop()
    assert fitted, "every random table stopped with an error, so no fit was checked"


def test_unwritable_out_is_one_line(tmp_path):
    data, out = tmp_path / "a.csv", tmp_path / "taken"
    data.write_text(GOOD + "w2,g2,a,x\nw2,g2,d,x\n")
    out.write_text("a file where the output folder should go")
    with pytest.raises(SystemExit) as info:
        main(["--data", str(data), "--out", str(out)] + TINY_FIT)
    assert isinstance(info.value.code, str) and "\n" not in info.value.code and "File exists" in info.value.code
