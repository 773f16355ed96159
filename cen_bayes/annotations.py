"""Read and validate a crowd annotation table.

The table is long: one row per image shown in a HIT, with columns
``worker_id, grid_id, image_id, group`` (README, "Your data"). Everything a model
learns comes from these four columns, so a malformed row must stop the run
with one line that says what is wrong and where, instead of being silently
dropped or turned into wrong pairs.

Rules, each with its reason:

* all four columns are required; a missing one is reported with the closest
  column found (a misspelling is the usual cause);
* no value may be missing or blank: a row without a worker, grid, image or
  group cannot be placed in any pair;
* one column holds one kind of value: all text or all numbers (ints and
  floats may mix, since 7 and 7.0 are one id). A column holding both 7 and
  '7', or True and 1, would silently split or merge workers, grids, images or
  groups, so it is an error; lists, arrays and other nested values are never
  ids. CSV ids are read as text and compared as text ('007', '7' and '7.0'
  are three different ids);
* an image appears at most once in a HIT, and a HIT has at least two images
  (one image gives no pair);
* a CSV file must be UTF-8: guessing another encoding would silently turn
  ids into different ids.

HITs that put every image in one group, or every image in a group of its
own, are legitimate (if odd) crowd behaviour: they are kept and counted
(``cen_bayes.crowd.odd_hit_counts``), never dropped.
"""

from __future__ import annotations

import difflib
import warnings
from numbers import Number
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

REQUIRED_COLUMNS = ("worker_id", "grid_id", "image_id", "group")


class AnnotationError(ValueError):
    """A one-line, user-facing description of what is wrong with the input."""


def read_annotations(source, name: str | None = None, lines=None) -> pd.DataFrame:
    """Load and validate an annotation table.

    ``source`` is a path to a CSV or Parquet file, or a pandas DataFrame.
    Returns a DataFrame with a fresh RangeIndex, the required columns first and
    any extra columns (e.g. ``group_text``) carried along unchanged. ``lines``
    (DataFrames only) gives each row's line in the file it was built from
    (``cen_bayes.importers``), so errors point at that file, not at the table.
    """
    if isinstance(source, pd.DataFrame):
        table, where = source.reset_index(drop=True), name or "annotation table"
        line_offset = 0 if lines is None else np.asarray(lines)
    else:
        path = Path(source)
        where = name or str(path)
        table = _read_file(path, where)
        line_offset = 2 if _is_csv(path) else 0  # CSV: header is line 1
    validate(table, where, line_offset)
    extra = [c for c in table.columns if c not in REQUIRED_COLUMNS]
    return table[list(REQUIRED_COLUMNS) + extra]


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() not in (".parquet", ".pq")


def _read_file(path: Path, where: str) -> pd.DataFrame:
    if not path.exists():
        raise AnnotationError(f"{where}: no such file")
    empty = empty_file_message(where, REQUIRED_COLUMNS)
    if path.is_file() and path.stat().st_size == 0:  # Parquet too, which pandas would call unreadable
        raise AnnotationError(empty)
    try:
        if _is_csv(path):
            # ids stay strings: '007' and '7' are different workers. index_col=False: a first row with
            # one field too many must not silently turn worker_id into the index and shift every column
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, dtype=str, keep_default_na=True, index_col=False)
        return pd.read_parquet(path)
    except UnicodeDecodeError as err:
        raise AnnotationError(not_utf8_message(path, where)) from err
    except pd.errors.ParserWarning as err:
        raise AnnotationError(f"{where}: the first data row has more fields than the header has columns") from err
    except pd.errors.EmptyDataError as err:  # only blank lines
        raise AnnotationError(empty) from err
    except Exception as err:  # any parser failure is the user's file, not our bug
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AnnotationError(f"{where}: cannot read file ({reason})") from err


def empty_file_message(where: str, columns) -> str:
    return f"{where}: file is empty (expected columns {', '.join(columns)})"


def not_utf8_message(path: Path, where: str) -> str:
    """Where the first byte that is not UTF-8 is, as a file line (the parser's own offset is per chunk)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        return (f"{where} line {line}: byte 0x{raw[err.start]:02x} at offset {err.start} is not UTF-8 "
                "(save the file as UTF-8)")
    return f"{where}: not UTF-8 text (save the file as UTF-8)"


def missing_columns_message(columns, missing: list[str], where: str, required=REQUIRED_COLUMNS) -> str:
    """Name the missing columns, what was found and, for each, the closest unused column found."""
    found = [str(c) for c in columns]
    spare = {c.strip().lower(): c for c in found if c not in required}
    hints = []
    for column in missing:
        close = difflib.get_close_matches(column.lower(), list(spare), n=1, cutoff=0.6)
        if close:
            hints.append(f"{spare[close[0]]!r} for {column}")
    hint = f"; did you mean {', '.join(hints)}?" if hints else ""
    return f"{where}: missing column(s) {', '.join(missing)} (found: {', '.join(found) or 'none'}){hint}"


def _kind(value) -> str:
    """The kind of an id for the one-kind-per-column rule: bool is not a number (True == 1)."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, Number):
        return "number"
    return type(value).__name__


def _short(value) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _check_kinds(values: pd.Series, column: str, where: str, line_offset) -> None:
    """Raise if ``values`` mix kinds (7 and '7') or hold nested values; C-speed unless there is a problem."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    if infer_dtype(values, skipna=True) not in ("mixed", "mixed-integer", "unknown-array"):
        return
    rows = values.notna().to_numpy().nonzero()[0]  # positions; nested values count as present
    present = values.to_numpy(dtype=object)[rows]
    kinds = [_kind(v) for v in present]  # error path only
    for row, value, kind in zip(rows, present, kinds):
        if kind not in ("text", "number", "boolean", "bytes"):
            raise AnnotationError(f"{where} {_locate([row], line_offset)}, column {column}: {_short(value)} is a "
                                  f"nested value ({kind}); values must be plain text or numbers")
    other = next((k for k in range(len(kinds)) if kinds[k] != kinds[0]), None)
    if other is None:  # pandas saw a mix our rule allows (e.g. Fraction and int: both numbers)
        return
    raise AnnotationError(
        f"{where} {_locate([rows[other]], line_offset)}, column {column}: {_short(present[other])} is "
        f"{kinds[other]} but {_short(present[0])} ({_locate([rows[0]], line_offset)}) is {kinds[0]}; "
        "use one kind per column, else e.g. 7 and '7' count as two different values")


def _locate(rows, line_offset) -> str:
    """Name rows the way the user sees them: file lines for CSV, row numbers otherwise.

    ``line_offset`` is added to a row's position (2 for CSV, whose header is line 1; 0 for a DataFrame's
    row numbers), or is an array of each row's line in an imported export, where several rows come
    from one line (``cen_bayes.importers``)."""
    rows = [int(r) for r in rows]
    if isinstance(line_offset, np.ndarray):
        word, numbers = "line", list(dict.fromkeys(int(line_offset[r]) for r in rows))
    else:
        word, numbers = ("line" if line_offset else "row"), [r + line_offset for r in rows]
    if len(numbers) == 1:
        return f"{word} {numbers[0]}"
    return f"{word}s {' and '.join(map(str, numbers[:2]))}"


def validate(table: pd.DataFrame, where: str = "annotation table", line_offset=0) -> None:
    """Raise AnnotationError for the first problem found; return None if the table is usable."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise AnnotationError(missing_columns_message(table.columns, missing, where))
    if len(table) == 0:
        raise AnnotationError(f"{where}: no annotation rows")
    twice = [c for c in REQUIRED_COLUMNS if (table.columns == c).sum() > 1]
    if twice:
        raise AnnotationError(f"{where}: column {twice[0]} appears more than once")
    for column in REQUIRED_COLUMNS:
        _check_kinds(table[column], column, where, line_offset)
    for column in REQUIRED_COLUMNS:
        values = table[column]
        blank = values.isna() | (values.astype(str).str.strip() == "")
        if blank.any():
            row = blank.to_numpy().nonzero()[0][0]
            raise AnnotationError(f"{where} {_locate([row], line_offset)}, column {column}: missing value")
    keys = ["worker_id", "grid_id"]
    duplicated = table.duplicated(keys + ["image_id"], keep=False)
    if duplicated.any():
        rows = duplicated.to_numpy().nonzero()[0]
        first = table.iloc[rows[0]]
        same = rows[(table.iloc[rows][keys + ["image_id"]] == first[keys + ["image_id"]]).all(axis=1).to_numpy()]
        raise AnnotationError(
            f"{where} {_locate(same[:2], line_offset)}: image {first.image_id} appears twice in the HIT "
            f"of worker {first.worker_id} on grid {first.grid_id}"
        )
    sizes = table.groupby(keys, sort=False)["image_id"].transform("size")
    single = (sizes < 2).to_numpy()
    if single.any():
        row = single.nonzero()[0][0]
        hit = table.iloc[row]
        raise AnnotationError(
            f"{where} {_locate([row], line_offset)}: the HIT of worker {hit.worker_id} on grid {hit.grid_id} "
            "has only one image, so it gives no pairs"
        )
