"""Toloka and MTurk exports become the exact long annotation table; what is left out is counted;
every malformed export stops with one line naming the file, the line and the column."""

import json
import re

import pandas as pd
import pytest

from cen_bayes.annotations import AnnotationError
from cen_bayes.crowd import CrowdData
from cen_bayes.importers import image_set_grid_id, load_table, read_mturk, read_toloka
from inference.svi import main

COLUMNS = ["worker_id", "grid_id", "image_id", "group", "assignment_id"]
TINY_FIT = ["--K", "2", "--steps", "20", "--draws", "5", "--psis-draws", "0", "--no-progress", "--no-figures"]

# 3 workers on 2 grids (tasks t1, t2): w3's answer on t1 is rejected, w1 left e.jpg unassigned on t2,
# w3's t2 answer is comma-separated text instead of JSON.
TOLOKA = (
    "ASSIGNMENT:worker_id\tASSIGNMENT:assignment_id\tASSIGNMENT:task_id\tASSIGNMENT:status\t"
    "INPUT:images\tOUTPUT:result\n"
    'w1\ta1\tt1\tAPPROVED\t["a.jpg","b.jpg","c.jpg"]\t["x","x","y"]\n'
    'w2\ta2\tt1\tSUBMITTED\t["a.jpg","b.jpg","c.jpg"]\t["p","q","q"]\n'
    'w3\ta3\tt1\tREJECTED\t["a.jpg","b.jpg","c.jpg"]\t["z","z","z"]\n'
    'w1\ta4\tt2\tACCEPTED\t["c.jpg","d.jpg","e.jpg"]\t["x","y",null]\n'
    "w3\ta5\tt2\tACCEPTED\tc.jpg, d.jpg, e.jpg\t1,1,2\n"
)
TOLOKA_TABLE = [
    ("w1", "t1", "a.jpg", "x", "a1"), ("w1", "t1", "b.jpg", "x", "a1"), ("w1", "t1", "c.jpg", "y", "a1"),
    ("w2", "t1", "a.jpg", "p", "a2"), ("w2", "t1", "b.jpg", "q", "a2"), ("w2", "t1", "c.jpg", "q", "a2"),
    ("w1", "t2", "c.jpg", "x", "a4"), ("w1", "t2", "d.jpg", "y", "a4"),
    ("w3", "t2", "c.jpg", "1", "a5"), ("w3", "t2", "d.jpg", "1", "a5"), ("w3", "t2", "e.jpg", "2", "a5"),
]

# MTurk, answers in one JSON column: a list aligned with Input.images, or an {image: group} object.
# W2 is rejected; W1 left e unassigned on H2 (an empty string); W3's comment spans two lines.
MTURK_JSON = (
    '"HITId","WorkerId","AssignmentId","AssignmentStatus","Input.images","Answer.groups","Answer.comment"\n'
    '"H1","W1","A1","Approved","[""a"",""b"",""c""]","[""1"",""1"",""2""]",""\n'
    '"H1","W2","A2","Rejected","[""a"",""b"",""c""]","not even read",""\n'
    '"H1","W3","A3","Submitted","[""a"",""b"",""c""]","{""a"": ""red"", ""b"": ""blue"", ""c"": ""red""}","two\n'
    'lines"\n'
    '"H2","W1","A4","Approved","d;e;f","[1, """", 1]",""\n'
    '"H2","W3","A5","Approved","d;e;f","{""d"": ""red"", ""e"": ""red"", ""f"": ""blue""}",""\n'
)
MTURK_JSON_TABLE = [
    ("W1", "H1", "a", "1", "A1"), ("W1", "H1", "b", "1", "A1"), ("W1", "H1", "c", "2", "A1"),
    ("W3", "H1", "a", "red", "A3"), ("W3", "H1", "b", "blue", "A3"), ("W3", "H1", "c", "red", "A3"),
    ("W1", "H2", "d", "1", "A4"), ("W1", "H2", "f", "1", "A4"),
    ("W3", "H2", "d", "red", "A5"), ("W3", "H2", "e", "red", "A5"), ("W3", "H2", "f", "blue", "A5"),
]

# MTurk, one Answer.<image_id> column per image: W2 left b unassigned on H2, W3 is rejected.
MTURK_COLUMNS = (
    "HITId,WorkerId,AssignmentId,AssignmentStatus,Input.images,Answer.a,Answer.b,Answer.c,Answer.d\n"
    "H1,W1,A1,Approved,a|b|c,g1,g1,g2,\n"
    "H1,W2,A2,Approved,a|b|c,g1,g2,g2,\n"
    "H2,W1,A3,Approved,b|c|d,,g1,g1,g2\n"
    "H2,W2,A4,Approved,b|c|d,,,g1,g1\n"
    "H2,W3,A5,Rejected,b|c|d,,g1,g1,g1\n"
)
MTURK_COLUMNS_TABLE = [
    ("W1", "H1", "a", "g1", "A1"), ("W1", "H1", "b", "g1", "A1"), ("W1", "H1", "c", "g2", "A1"),
    ("W2", "H1", "a", "g1", "A2"), ("W2", "H1", "b", "g2", "A2"), ("W2", "H1", "c", "g2", "A2"),
    ("W1", "H2", "b", "g1", "A3"), ("W1", "H2", "c", "g1", "A3"), ("W1", "H2", "d", "g2", "A3"),
    ("W2", "H2", "c", "g1", "A4"), ("W2", "H2", "d", "g1", "A4"),
]


def write(tmp_path, text, name):
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(table, columns=COLUMNS):
    return list(table[columns].itertuples(index=False, name=None))


@pytest.mark.parametrize("text, name, reader, expected, dropped, n_pairs", [
    (TOLOKA, "toloka.tsv", read_toloka, TOLOKA_TABLE, (1, 1), 3 + 3 + 1 + 3),
    (MTURK_JSON, "batch.csv", read_mturk, MTURK_JSON_TABLE, (1, 1), 3 + 3 + 1 + 3),
    (MTURK_COLUMNS, "batch.csv", read_mturk, MTURK_COLUMNS_TABLE, (1, 1), 3 + 3 + 3 + 1),
], ids=["toloka", "mturk json", "mturk columns"])
def test_export_becomes_the_long_table(tmp_path, text, name, reader, expected, dropped, n_pairs):
    imported = reader(write(tmp_path, text, name))
    assert list(imported.table.columns) == COLUMNS
    assert rows(imported.table) == expected
    assert imported.dropped == {"n_rejected_assignments": dropped[0], "n_unassigned_images": dropped[1]}
    data = CrowdData.from_table(imported.table)
    assert len(data.pairs) == n_pairs


def test_pair_labels_of_the_toloka_export(tmp_path):
    data = CrowdData.from_table(read_toloka(write(tmp_path, TOLOKA, "toloka.tsv")).table)
    pairs = pd.DataFrame({"worker": data.workers[data.pairs.worker.numpy()],
                          "grid": data.grids[data.pairs.grid.numpy()],
                          "i": data.images[data.pairs.i.numpy()], "j": data.images[data.pairs.j.numpy()],
                          "label": data.pairs.label.numpy().astype(int)})
    same = {(w, g, i, j) for w, g, i, j, label in pairs.itertuples(index=False, name=None) if label}
    assert same == {("w1", "t1", "a.jpg", "b.jpg"), ("w2", "t1", "b.jpg", "c.jpg"), ("w3", "t2", "c.jpg", "d.jpg")}
    assert int(pairs.label.sum()) == 3 and len(pairs) == 10


def test_toloka_csv_and_grids_from_the_image_set(tmp_path):
    """No task column: the same images, in any order, are one grid; the id is fixed by the images."""
    text = ("ASSIGNMENT:worker_id,INPUT:images,OUTPUT:result\n"
            'w1,"[""a.jpg"",""b.jpg"",""c.jpg""]","[""x"",""x"",""y""]"\n'
            'w2,"[""c.jpg"",""a.jpg"",""b.jpg""]","[""x"",""y"",""y""]"\n'
            'w1,"[""c.jpg"",""d.jpg""]","[""x"",""y""]"\n')
    table = read_toloka(write(tmp_path, text, "toloka.csv")).table
    assert list(table.columns) == ["worker_id", "grid_id", "image_id", "group"]  # no assignment id to carry
    assert table.grid_id.tolist() == ["grid-152c772d8e73"] * 6 + ["grid-3bcc10be7ce1"] * 2
    assert image_set_grid_id(["b.jpg", "c.jpg", "a.jpg"]) == "grid-152c772d8e73"
    assert table.group.tolist() == ["x", "x", "y", "x", "y", "y", "x", "y"]


def test_task_id_column_variant_and_json_numbers(tmp_path):
    text = "TASK:id\tASSIGNMENT:worker_id\tINPUT:images\tOUTPUT:result\nT9\tw1\t[1, 2, 3]\t[1, 1.5, true]\n"
    table = read_toloka(write(tmp_path, text, "toloka.tsv")).table
    assert rows(table, COLUMNS[:4]) == [("w1", "T9", "1", "1"), ("w1", "T9", "2", "1.5"), ("w1", "T9", "3", "true")]


def test_load_table_dispatches_and_plain_tables_drop_nothing(tmp_path):
    plain = write(tmp_path, "worker_id,grid_id,image_id,group\nw,g,a,1\nw,g,b,2\n", "plain.csv")
    assert load_table(plain).dropped == {} and len(load_table(plain).table) == 2
    assert rows(load_table(write(tmp_path, TOLOKA, "t.tsv"), "toloka").table) == TOLOKA_TABLE
    with pytest.raises(ValueError, match="format must be one of table, toloka, mturk"):
        load_table(plain, "excel")


# ----- errors: (file name, text, reader, exact message after the path) ----------------------------------
TOLOKA_HEAD = "ASSIGNMENT:worker_id\tASSIGNMENT:task_id\tINPUT:images\tOUTPUT:result\n"
ERRORS = {
    "toloka misspelt column": (
        "t.tsv", TOLOKA_HEAD.replace("INPUT:images", "INPUT:image") + 'w1\tt1\t["a","b"]\t["x","y"]\n', read_toloka,
        ": missing column(s) INPUT:images (found: ASSIGNMENT:worker_id, ASSIGNMENT:task_id, INPUT:image, "
        "OUTPUT:result); did you mean 'INPUT:image' for INPUT:images?"),
    "toloka lengths disagree": (
        "t.tsv", TOLOKA_HEAD + 'w1\tt1\t["a","b"]\t["x","y"]\nw2\tt1\t["a","b","c"]\t["x","y"]\n', read_toloka,
        " line 3, column OUTPUT:result: 2 groups for 3 images in INPUT:images "
        "(expected one group per image, in the same order)"),
    "toloka malformed JSON": (
        "t.tsv", TOLOKA_HEAD + 'w1\tt1\t["a" "b"]\t["x","y"]\n', read_toloka,
        " line 2, column INPUT:images: malformed JSON (Expecting ',' delimiter at character 6)"),
    "toloka empty file": ("t.tsv", "", read_toloka,
                          ": file is empty (expected columns ASSIGNMENT:worker_id, INPUT:images, OUTPUT:result)"),
    "toloka header only": ("t.tsv", TOLOKA_HEAD, read_toloka, ": no annotation rows (only a header)"),
    "toloka blank worker": ("t.tsv", TOLOKA_HEAD + 'w1\tt1\ta,b\tx,y\n \tt1\ta,b\tx,y\n', read_toloka,
                            " line 3, column ASSIGNMENT:worker_id: missing value"),
    "toloka blank answer": ("t.tsv", TOLOKA_HEAD + 'w1\tt1\ta,b\t\n', read_toloka,
                            " line 2, column OUTPUT:result: missing value"),
    "toloka empty image id": ("t.tsv", TOLOKA_HEAD + 'w1\tt1\t["a",""]\tx,y\n', read_toloka,
                              " line 2, column INPUT:images: image 2 of 2 is empty"),
    "toloka nested group": ("t.tsv", TOLOKA_HEAD + 'w1\tt1\ta,b\t["x",["y"]]\n', read_toloka,
                            ' line 2, column OUTPUT:result: group 2 is a nested value (["y"]); '
                            "expected text or a number"),
    "toloka images as object": ("t.tsv", TOLOKA_HEAD + 'w1\tt1\t{"a": 1}\tx\n', read_toloka,
                                " line 2, column INPUT:images: expected a list of image ids (a JSON array or "
                                "comma-separated text), got a JSON object"),
    "toloka ragged row": ("t.tsv", TOLOKA_HEAD + "w1\tt1\ta,b\n", read_toloka,
                          " line 2: 3 fields, but the header has 4 columns (is the file tab-separated?)"),
    "toloka image twice in an answer": (
        "t.tsv", TOLOKA_HEAD + "w1\tt2\tc,d\tx,y\nw1\tt1\ta,b,a\tx,y,x\n", read_toloka,
        " line 3: image a appears twice in the HIT of worker w1 on grid t1"),
    "toloka one worker answers a grid twice": (
        "t.tsv", TOLOKA_HEAD + "w1\tt1\ta,b\tx,y\nw2\tt1\ta,b\tx,y\nw1\tt1\ta,b\tx,x\n", read_toloka,
        " lines 2 and 4: image a appears twice in the HIT of worker w1 on grid t1"),
    "toloka one image left": (
        "t.tsv", TOLOKA_HEAD + 'w1\tt1\ta,b\tx,y\nw2\tt1\t["a","b","c"]\t["x",null,""]\n', read_toloka,
        " line 3: the HIT of worker w2 on grid t1 has only one image, so it gives no pairs"),
    "toloka everything left out": (
        "t.tsv", "ASSIGNMENT:status\t" + TOLOKA_HEAD + "REJECTED\tw1\tt1\ta,b\tx,y\nACCEPTED\tw2\tt1\ta,b\t,\n",
        read_toloka, ": no annotation rows left (1 rejected assignment(s), 2 unassigned image(s) left out)"),
    "mturk no answer column": (
        "m.csv", "HITId,WorkerId,Input.images\nH1,W1,a|b\n", read_mturk,
        ": no answer column; expected Answer.groups (a list of groups aligned with Input.images, or a JSON object "
        "{image_id: group}) or one Answer.<image_id> column per image (found: HITId, WorkerId, Input.images)"),
    "mturk misspelt HITId": (
        "m.csv", "HitID,WorkerId,Input.images,Answer.groups\nH1,W1,a|b,x|y\n", read_mturk,
        ": missing column(s) HITId (found: HitID, WorkerId, Input.images, Answer.groups); did you mean 'HitID' for "
        "HITId?"),
    "mturk no column for an image": (
        "m.csv", "HITId,WorkerId,Input.images,Answer.a,Answer.b,Answer.comment\nH1,W1,a|b,x,y,\nH2,W1,a|c,x,y,\n",
        read_mturk, " line 3, column Input.images: no column Answer.c for image c (expected Answer.groups or one "
        "Answer.<image_id> column per image; found Answer.a, Answer.b, Answer.comment)"),
    "mturk object names an image not shown": (
        "m.csv", 'HITId,WorkerId,Input.images,Answer.groups\nH1,W1,a|b,"{""a"": 1, ""z"": 2}"\n', read_mturk,
        " line 2, column Answer.groups: image 'z' is not in Input.images"),
    "mturk error after a two-line cell": (
        "m.csv", MTURK_JSON + '"H3","W1","A6","Approved","[""g"",""h""]","[""1""]",""\n', read_mturk,
        " line 8, column Answer.groups: 1 groups for 2 images in Input.images "
        "(expected one group per image, in the same order)"),
    "mturk blank HIT": ("m.csv", "HITId,WorkerId,Input.images,Answer.groups\n,W1,a|b,x|y\n", read_mturk,
                        " line 2, column HITId: missing value"),
    "mturk not UTF-8": (
        "m.csv", None, read_mturk, " line 3: byte 0xe9 at offset"),
}


def error_of(tmp_path, case):
    name, text, reader, _ = ERRORS[case]
    path = tmp_path / name
    if text is None:  # the non-UTF-8 case
        path.write_bytes("HITId,WorkerId,Input.images,Answer.groups\nH1,W1,a|b,x|y\n".encode()
                         + "H2,W1,caf\u00e9|b,x|y\n".encode("latin-1"))
    else:
        path.write_text(text)
    with pytest.raises(AnnotationError) as info:
        reader(path)
    return str(path), str(info.value)


@pytest.mark.parametrize("case", list(ERRORS))
def test_malformed_export_is_one_line_naming_file_line_and_column(tmp_path, case):
    path, message = error_of(tmp_path, case)
    assert "\n" not in message
    expected = path + ERRORS[case][3]
    if case == "mturk not UTF-8":
        assert message.startswith(expected)
    else:
        assert message == expected


def test_no_such_file(tmp_path):
    with pytest.raises(AnnotationError, match=r"nope\.tsv: no such file$"):
        read_toloka(tmp_path / "nope.tsv")


# ----- end to end through python -m inference.svi --------------------------------------------------------
@pytest.mark.parametrize("fmt, text, name", [("toloka", TOLOKA, "toloka.tsv"), ("mturk", MTURK_JSON, "batch.csv"),
                                             ("mturk", MTURK_COLUMNS, "batch.csv")],
                         ids=["toloka", "mturk json", "mturk columns"])
def test_cli_fits_an_export_and_reports_what_was_left_out(tmp_path, capsys, fmt, text, name):
    out = tmp_path / "out"
    main(["--data", str(write(tmp_path, text, name)), "--format", fmt, "--out", str(out)] + TINY_FIT)
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_rejected_assignments"], metrics["n_unassigned_images"]) == (1, 1)
    assert metrics["n_train_hits"] + metrics["n_test_hits"] == 4
    assert "left out on import: 1 rejected assignments, 1 unassigned images" in printed
    assert re.search(r"\n  left out on import +1 rejected assignments, 1 unassigned images\n", printed)
    assert json.loads((out / "run.json").read_text())["format"] == fmt
    hits = pd.read_csv(out / "hits.csv")
    assert len(hits) == 4


def test_cli_table_format_reports_no_import_counts(tmp_path, capsys):
    path = tmp_path / "plain.csv"
    pd.DataFrame(TOLOKA_TABLE, columns=COLUMNS).to_csv(path, index=False)
    main(["--data", str(path), "--out", str(tmp_path / "out")] + TINY_FIT)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "n_rejected_assignments" not in metrics and "left out on import" not in capsys.readouterr().out


def test_cli_bad_export_is_one_line(tmp_path):
    path = write(tmp_path, TOLOKA_HEAD + 'w1\tt1\t["a" "b"]\t["x","y"]\n', "t.tsv")
    with pytest.raises(SystemExit) as info:
        main(["--data", str(path), "--format", "toloka", "--out", str(tmp_path / "out")] + TINY_FIT)
    assert info.value.code == (f"error: {path} line 2, column INPUT:images: malformed JSON "
                               "(Expecting ',' delimiter at character 6)")
    assert not (tmp_path / "out").exists()


def test_cli_format_needs_a_data_file(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "tiny", "--format", "mturk"])
    assert info.value.code == 2 and "--format mturk reads a --data file" in capsys.readouterr().err
