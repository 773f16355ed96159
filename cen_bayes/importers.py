"""Turn crowd-platform exports (Toloka, Amazon Mechanical Turk) into the annotation table.

Platforms export one row per answer (one worker's sorting of one grid), with the
grid's images and the worker's groups as two lists in two cells; the models read
the long table of the README ("Your data"), one row per image. Each reader here unrolls the
lists and hands the result to ``read_annotations``, so a duplicate image in a
HIT or a one-image HIT stops with the same message as in a table, pointing at
the export's line.

Toloka assignment export (``--format toloka``): TSV as Toloka writes it (a
``.csv`` file is read comma-separated instead), one row per assignment and task:

    ASSIGNMENT:worker_id      required  the worker
    INPUT:images              required  the grid's image ids (a list)
    OUTPUT:result             required  the groups (a list, one per image of INPUT:images,
                                        or a JSON object {image_id: group})
    ASSIGNMENT:task_id        optional  the grid; else TASK:id; else the image set itself:
                                        "grid-" + the first 12 hex digits of the sha1 of the
                                        sorted ids joined by newlines, so the same images
                                        shown to several workers are one grid
    ASSIGNMENT:assignment_id  optional  carried as column assignment_id
    ASSIGNMENT:status         optional  rows saying REJECTED are left out and counted

MTurk batch results CSV (``--format mturk``):

    WorkerId           required  the worker
    HITId              required  the grid (an MTurk HIT is one grid shown to several workers)
    Input.images       required  the grid's image ids (a list)
    Answer.groups      the groups, as OUTPUT:result above
    Answer.<image_id>  without Answer.groups: one column per image, holding its group
    AssignmentId       optional  carried as column assignment_id
    AssignmentStatus   optional  rows saying Rejected are left out and counted

A list is a JSON array (``["a.jpg", "b.jpg"]``) or text separated by commas,
semicolons or pipes (``a.jpg, b.jpg``; spaces around items are dropped). Ids and
groups are text, as in a CSV table: a JSON number becomes its JSON text (1 -> "1").
Other columns are ignored. Status words are compared ignoring case.

Left out, and counted (``Imported.dropped``; the CLI prints it and writes it to
metrics.json), since nothing is dropped silently:

* rejected assignments (``n_rejected_assignments``, rows of the export): a
  rejected answer is not an annotation, so its cells are not even read;
* unassigned images (``n_unassigned_images``): an empty or null group, a blank
  ``Answer.<image_id>`` cell or an image missing from a JSON object means the
  worker put the image in no group. Real crowd answers do this; such an image
  gives no pair in that HIT, so its row is left out of the table.

Anything else stops with one line naming the file, the line and the column: a
missing column (with the closest name found), a blank id or answer, malformed
JSON, a list where the groups and the images disagree in length, an empty file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from cen_bayes.annotations import (AnnotationError, empty_file_message, missing_columns_message, not_utf8_message,
                                   read_annotations)

FORMATS = ("table", "toloka", "mturk")
TOLOKA_REQUIRED = ("ASSIGNMENT:worker_id", "INPUT:images", "OUTPUT:result")
TOLOKA_OPTIONAL = ("ASSIGNMENT:task_id", "TASK:id", "ASSIGNMENT:assignment_id", "ASSIGNMENT:status")
MTURK_REQUIRED = ("WorkerId", "HITId", "Input.images")
MTURK_OPTIONAL = ("Answer.groups", "AssignmentId", "AssignmentStatus")
_SEPARATORS = re.compile(r"[,;|]")


@dataclass
class Imported:
    """A validated annotation table and what was left out on the way (empty for a plain table)."""

    table: pd.DataFrame
    dropped: dict = field(default_factory=dict)  # n_rejected_assignments, n_unassigned_images


def load_table(source, format: str = "table", name: str | None = None) -> Imported:
    """The validated table from ``source`` read as ``format`` (one of FORMATS)."""
    if format == "table":
        return Imported(read_annotations(source, name))
    if format not in READERS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    return READERS[format](source, name)


def read_toloka(path, name: str | None = None) -> Imported:
    """A Toloka assignment export (module docstring) as the annotation table."""
    path = Path(path)
    where = name or str(path)
    frame, lines = _read_rows(path, where, "," if path.suffix.lower() == ".csv" else "\t", TOLOKA_REQUIRED)
    _require(frame, TOLOKA_REQUIRED, TOLOKA_REQUIRED + TOLOKA_OPTIONAL, where)
    frame, lines, n_rejected = _drop_rejected(frame, lines, "ASSIGNMENT:status")
    worker = _ids(frame, lines, "ASSIGNMENT:worker_id", where)
    images = _per_row(where, lines, "INPUT:images", _image_ids, frame["INPUT:images"])
    groups = _per_row(where, lines, "OUTPUT:result", partial(_groups, images_column="INPUT:images"),
                      frame["OUTPUT:result"], images)
    task = next((c for c in ("ASSIGNMENT:task_id", "TASK:id") if c in frame), None)
    grid = _ids(frame, lines, task, where) if task else np.array([image_set_grid_id(i) for i in images], dtype=object)
    assignment = frame.get("ASSIGNMENT:assignment_id")
    return _long_table(where, lines, worker, grid, assignment, images, groups, n_rejected)


def read_mturk(path, name: str | None = None) -> Imported:
    """An MTurk batch results CSV (module docstring) as the annotation table."""
    path = Path(path)
    where = name or str(path)
    frame, lines = _read_rows(path, where, ",", MTURK_REQUIRED)
    _require(frame, MTURK_REQUIRED, MTURK_REQUIRED + MTURK_OPTIONAL, where)
    answers = [c for c in frame.columns if c.startswith("Answer.")]
    if not answers:
        raise AnnotationError(f"{where}: no answer column; expected Answer.groups (a list of groups aligned with "
                              "Input.images, or a JSON object {image_id: group}) or one Answer.<image_id> column per "
                              f"image (found: {', '.join(frame.columns)})")
    frame, lines, n_rejected = _drop_rejected(frame, lines, "AssignmentStatus")
    worker = _ids(frame, lines, "WorkerId", where)
    grid = _ids(frame, lines, "HITId", where)
    images = _per_row(where, lines, "Input.images", _image_ids, frame["Input.images"])
    if "Answer.groups" in frame:
        groups = _per_row(where, lines, "Answer.groups", partial(_groups, images_column="Input.images"),
                          frame["Answer.groups"], images)
    else:
        cells = frame.to_dict("records")
        groups = _per_row(where, lines, "Input.images", partial(_answer_columns, answers=answers), cells, images)
    return _long_table(where, lines, worker, grid, frame.get("AssignmentId"), images, groups, n_rejected)


READERS = {"toloka": read_toloka, "mturk": read_mturk}


def image_set_grid_id(images) -> str:
    """A grid id that depends only on which images were shown (not their order), stable across runs."""
    return "grid-" + hashlib.sha1("\n".join(sorted(images)).encode()).hexdigest()[:12]


def _read_rows(path: Path, where: str, delimiter: str, expected) -> tuple[pd.DataFrame, np.ndarray]:
    """The export's cells as text, and each row's first line in the file.

    Read with the csv module rather than pandas because it tells where each
    record starts, so a quoted cell spanning lines (an MTurk comment) does not
    shift the line numbers of every later error.
    """
    if not path.is_file():
        raise AnnotationError(f"{where}: no such file")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # Excel's CSVs start with a byte-order mark
    except UnicodeDecodeError:
        raise AnnotationError(not_utf8_message(path, where)) from None
    if not text.strip():
        raise AnnotationError(empty_file_message(where, expected))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    separated = "tab" if delimiter == "\t" else "comma"
    header, records, lines, end = None, [], [], 0
    try:
        for fields in reader:
            line, end = end + 1, reader.line_num
            if not any(f.strip() for f in fields):  # a blank line
                continue
            if header is None:
                header = fields
            elif len(fields) != len(header):
                raise AnnotationError(f"{where} line {line}: {len(fields)} fields, but the header has {len(header)} "
                                      f"columns (is the file {separated}-separated?)")
            else:
                records.append(fields)
                lines.append(line)
    except csv.Error as err:
        raise AnnotationError(f"{where} line {reader.line_num}: cannot read ({err})") from None
    if header is None:  # only blank lines and separators
        raise AnnotationError(empty_file_message(where, expected))
    twice = next((c for c in header if header.count(c) > 1), None)
    if twice is not None:
        raise AnnotationError(f"{where}: column {twice} appears more than once")
    if not records:
        raise AnnotationError(f"{where}: no annotation rows (only a header)")
    return pd.DataFrame(records, columns=header), np.array(lines)


def _require(frame: pd.DataFrame, required, known, where: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise AnnotationError(missing_columns_message(frame.columns, missing, where, required=known))


def _drop_rejected(frame: pd.DataFrame, lines: np.ndarray, column: str):
    """The rows not rejected, their lines, and how many were."""
    if column not in frame:
        return frame, lines, 0
    rejected = (frame[column].str.strip().str.upper() == "REJECTED").to_numpy()
    return frame[~rejected].reset_index(drop=True), lines[~rejected], int(rejected.sum())


def _ids(frame: pd.DataFrame, lines: np.ndarray, column: str, where: str) -> np.ndarray:
    """An id column, as written; a blank id cannot be placed in any HIT."""
    blank = (frame[column].str.strip() == "").to_numpy()
    if blank.any():
        raise AnnotationError(f"{where} line {lines[blank.argmax()]}, column {column}: missing value")
    return frame[column].to_numpy(dtype=object)


def _per_row(where: str, lines, column: str, parse, *values) -> list:
    """``parse`` applied row by row; its ValueError becomes a one-line error at that line and column."""
    parsed = []
    for line, *args in zip(lines, *values):
        try:
            parsed.append(parse(*args))
        except ValueError as err:
            raise AnnotationError(f"{where} line {line}, column {column}: {err}") from None
    return parsed


def _parse_list(text: str):
    """A JSON array or object, or separated text as a list of stripped items."""
    text = text.strip()
    if not text:
        raise ValueError("missing value")
    if text[0] not in "[{":
        return [item.strip() for item in _SEPARATORS.split(text)]
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed JSON ({err.msg} at character {err.pos + 1})") from None


def _as_text(values, what: str) -> list:
    """Ids and groups as text (None stays None): a CSV table's ids are text too."""
    out = []
    for k, value in enumerate(values, 1):
        if isinstance(value, (list, dict)):
            raise ValueError(f"{what} {k} is a nested value ({json.dumps(value)[:40]}); expected text or a number")
        out.append(value if value is None or isinstance(value, str) else json.dumps(value))
    return out


def _image_ids(text: str) -> list:
    ids = _parse_list(text)
    if not isinstance(ids, list):
        raise ValueError("expected a list of image ids (a JSON array or comma-separated text), got a JSON object")
    ids = _as_text(ids, "image")
    empty = next((k for k, image in enumerate(ids, 1) if image is None or not image.strip()), None)
    if empty is not None:
        raise ValueError(f"image {empty} of {len(ids)} is empty")
    return ids


def _groups(text: str, images: list, images_column: str) -> list:
    """One group (or None: unassigned) per image, from a list aligned with the images or an {image: group} object."""
    groups = _parse_list(text)
    if isinstance(groups, dict):
        unknown = next((key for key in groups if key not in images), None)
        if unknown is not None:
            raise ValueError(f"image {unknown!r} is not in {images_column}")
        groups = [groups.get(image) for image in images]
    elif len(groups) != len(images):
        raise ValueError(f"{len(groups)} groups for {len(images)} images in {images_column} "
                         "(expected one group per image, in the same order)")
    return [None if g is None or not g.strip() else g for g in _as_text(groups, "group")]


def _answer_columns(cells: dict, images: list, answers: list) -> list:
    """MTurk's one-column-per-image answers: the group of each image (None: unassigned)."""
    missing = next((image for image in images if f"Answer.{image}" not in cells), None)
    if missing is not None:
        raise ValueError(f"no column Answer.{missing} for image {missing} (expected Answer.groups or one "
                         f"Answer.<image_id> column per image; found {', '.join(answers)})")
    return [cells[f"Answer.{image}"] if cells[f"Answer.{image}"].strip() else None for image in images]


def _long_table(where, lines, worker, grid, assignment, images, groups, n_rejected) -> Imported:
    """One row per (answer, image) with a group, validated by ``read_annotations`` at the export's lines."""
    sizes = [len(row) for row in images]
    table = pd.DataFrame({"worker_id": np.repeat(worker, sizes), "grid_id": np.repeat(grid, sizes),
                          "image_id": [image for row in images for image in row],
                          "group": [group for row in groups for group in row]}, dtype=object)
    if assignment is not None:
        table["assignment_id"] = np.repeat(assignment.to_numpy(dtype=object), sizes)
    assigned = table["group"].notna().to_numpy()
    dropped = {"n_rejected_assignments": n_rejected, "n_unassigned_images": int((~assigned).sum())}
    if not assigned.any():
        raise AnnotationError(f"{where}: no annotation rows left ({n_rejected} rejected assignment(s), "
                              f"{dropped['n_unassigned_images']} unassigned image(s) left out)")
    line = np.repeat(lines, sizes)[assigned]
    return Imported(read_annotations(table[assigned].reset_index(drop=True), where, lines=line), dropped)
