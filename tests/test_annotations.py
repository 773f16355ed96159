"""Every malformed input stops with one line naming the problem and where it is."""

import pandas as pd
import pytest

from cen_bayes.annotations import AnnotationError, read_annotations

GOOD = "worker_id,grid_id,image_id,group\nw1,g1,a,x\nw1,g1,b,x\nw1,g1,c,y\n"


def write(tmp_path, text, name="ann.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(source):
    with pytest.raises(AnnotationError) as info:
        read_annotations(source)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_csv_and_parquet_read_the_same(tmp_path):
    table = read_annotations(write(tmp_path, GOOD))
    assert list(table.columns) == ["worker_id", "grid_id", "image_id", "group"]
    parquet = tmp_path / "ann.parquet"
    table.to_parquet(parquet)
    pd.testing.assert_frame_equal(read_annotations(parquet), table)


def test_extra_columns_are_carried(tmp_path):
    text = "group_text,worker_id,grid_id,image_id,group\nmen,w1,g1,a,x\nmen,w1,g1,b,x\n"
    table = read_annotations(write(tmp_path, text))
    assert list(table.columns)[-1] == "group_text"


def test_ids_stay_strings(tmp_path):
    table = read_annotations(write(tmp_path, "worker_id,grid_id,image_id,group\n007,1,01,1\n007,1,1,1\n"))
    assert table.worker_id[0] == "007" and set(table.image_id) == {"01", "1"}


def test_missing_column(tmp_path):
    message = error_of(write(tmp_path, "worker_id,grid_id,image\nw1,g1,a\n"))
    assert "missing column(s) image_id, group" in message and "ann.csv" in message


def test_nan_value_names_line_and_column(tmp_path):
    message = error_of(write(tmp_path, GOOD + "w1,g1,,y\n"))
    assert "line 5" in message and "column image_id" in message and "missing value" in message


def test_nan_in_dataframe_names_row():
    frame = pd.DataFrame({"worker_id": ["w", "w"], "grid_id": ["g", None], "image_id": ["a", "b"], "group": [1, 1]})
    message = error_of(frame)
    assert "row 1" in message and "grid_id" in message


def test_grid_of_one_image(tmp_path):
    message = error_of(write(tmp_path, GOOD + "w2,g1,a,x\n"))
    assert "only one image" in message and "line 5" in message and "w2" in message and "g1" in message


def test_duplicate_image_in_hit(tmp_path):
    message = error_of(write(tmp_path, GOOD + "w1,g1,b,y\n"))
    assert "image b appears twice" in message and "lines 3 and 5" in message


def test_empty_file(tmp_path):
    assert "file is empty" in error_of(write(tmp_path, ""))


def test_header_only(tmp_path):
    assert "no annotation rows" in error_of(write(tmp_path, "worker_id,grid_id,image_id,group\n"))


def test_unreadable_file(tmp_path):
    path = tmp_path / "ann.parquet"
    path.write_bytes(b"this is not parquet")
    assert "cannot read file" in error_of(path)


def test_missing_file(tmp_path):
    assert "no such file" in error_of(tmp_path / "nope.csv")
