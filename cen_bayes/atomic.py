"""Write output files whole or not at all: a run killed mid-write leaves the old file (or none),
never half a CSV, netCDF or checkpoint that a later read would take for a result."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` when the block ends without error.

    The temporary name keeps the suffix, so writers that pick a format from it
    (matplotlib, xarray) still do; ``os.replace`` is atomic within a folder.
    """
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_csv(frame, path: str | Path, **to_csv) -> Path:
    """``frame.to_csv(path, index=False, **to_csv)``, whole or not at all."""
    with atomic_path(path) as partial:
        frame.to_csv(partial, index=False, **to_csv)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as partial:
        partial.write_text(text)
    return Path(path)
