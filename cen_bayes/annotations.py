"""Read and validate a crowd annotation table.

The table is long: one row per image shown in a HIT, with columns
``worker_id, grid_id, image_id, group`` (see DESIGN.md). Everything a model
learns comes from these four columns, so a malformed row must stop the run
with one line that says what is wrong and where, instead of being silently
dropped or turned into wrong pairs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REQUIRED_COLUMNS = ("worker_id", "grid_id", "image_id", "group")


class AnnotationError(ValueError):
    """A one-line, user-facing description of what is wrong with the input."""


def read_annotations(source, name: str | None = None) -> pd.DataFrame:
    """Load and validate an annotation table.

    ``source`` is a path to a CSV or Parquet file, or a pandas DataFrame.
    Returns a DataFrame with a fresh RangeIndex, the required columns first and
    any extra columns (e.g. ``group_text``) carried along unchanged.
    """
    if isinstance(source, pd.DataFrame):
        table, where = source.reset_index(drop=True), name or "annotation table"
        line_offset = 0
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
    if path.is_file() and path.stat().st_size == 0:
        raise AnnotationError(f"{where}: file is empty (expected columns {', '.join(REQUIRED_COLUMNS)})")
    try:
        if _is_csv(path):
            # ids stay strings: '007' and '7' are different workers
            return pd.read_csv(path, dtype=str, keep_default_na=True)
        return pd.read_parquet(path)
    except Exception as err:  # any parser failure is the user's file, not our bug
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AnnotationError(f"{where}: cannot read file ({reason})") from err


def _locate(rows, line_offset: int) -> str:
    """Name rows the way the user sees them: file lines for CSV, row numbers otherwise."""
    rows = [int(r) for r in rows]
    word = "line" if line_offset else "row"
    numbers = [r + line_offset for r in rows]
    if len(numbers) == 1:
        return f"{word} {numbers[0]}"
    return f"{word}s {' and '.join(map(str, numbers[:2]))}"


def validate(table: pd.DataFrame, where: str = "annotation table", line_offset: int = 0) -> None:
    """Raise AnnotationError for the first problem found; return None if the table is usable."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        found = ", ".join(map(str, table.columns)) or "none"
        raise AnnotationError(f"{where}: missing column(s) {', '.join(missing)} (found: {found})")
    if len(table) == 0:
        raise AnnotationError(f"{where}: no annotation rows")
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
