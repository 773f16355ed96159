"""The grids to show (``next_grids.csv``) and the image files they name, checked once at startup.

A grids file has columns ``grid_id,image_id``, one row per image of each grid,
in the order the page shows them; grids are offered in the order they first
appear. Everything is checked before the server starts, because a bad row
found later would show a person a broken grid or store an answer the models
cannot read: a missing column, a blank id, an image twice in one grid, a
grid of one image (it gives no pair), an image with no file. Each stops with
one line naming the file, the line and the problem.

An ``image_id`` is the image's file name in the images folder (``cat_07.jpg``,
or ``birds/cat_07.jpg`` below it). An id without its extension (``cat_07``)
names the one file with that stem (``cat_07.jpg``); two such files are an
error, since the page could show either. Ids never reach outside the folder.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from cen_bayes.annotations import empty_file_message, missing_columns_message, not_utf8_message

COLUMNS = ("grid_id", "image_id")
MAX_GROUPS = 10  # the paper's interface: at most 10 groups per grid


class GridsError(ValueError):
    """A one-line, user-facing description of what is wrong with the grids file or the images."""


@dataclass(frozen=True)
class Grids:
    """The grids in file order, each grid's images in page order, and each image's file."""

    order: tuple[str, ...]
    images: dict[str, tuple[str, ...]]
    files: dict[str, Path]

    def __len__(self) -> int:
        return len(self.order)


def load_grids(grids_file, images_dir) -> Grids:
    """Read and check ``grids_file``, then find every image's file in ``images_dir``."""
    images, lines = read_grids(grids_file)
    return Grids(tuple(images), images, find_images(images, lines, images_dir, Path(grids_file)))


def read_grids(path) -> tuple[dict[str, tuple[str, ...]], dict[tuple[str, str], int]]:
    """Each grid's image ids in file order, and the line of each (grid, image) for later messages."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise GridsError(f"{where}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise GridsError(not_utf8_message(path, where)) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    while header is not None and not any(cell.strip() for cell in header):  # blank lines before the header
        header = next(reader, None)
    if header is None:
        raise GridsError(empty_file_message(where, COLUMNS))
    header = [cell.strip() for cell in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise GridsError(missing_columns_message(header, missing, where, required=COLUMNS))
    twice = [c for c in COLUMNS if header.count(c) > 1]
    if twice:
        raise GridsError(f"{where}: column {twice[0]} appears more than once")
    grid_col, image_col = header.index("grid_id"), header.index("image_id")
    grids: dict[str, list[str]] = {}
    lines: dict[tuple[str, str], int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # a blank line (often the last) is no row
        if len(row) > len(header):
            raise GridsError(f"{where} line {line}: {len(row)} fields but the header has {len(header)} columns")
        cells = row + [""] * (len(header) - len(row))
        grid, image = cells[grid_col].strip(), cells[image_col].strip()
        for column, value in (("grid_id", grid), ("image_id", image)):
            if not value:
                raise GridsError(f"{where} line {line}, column {column}: missing value")
        if (grid, image) in lines:
            raise GridsError(f"{where} line {line}: image {image} appears twice in grid {grid} "
                             f"(first on line {lines[grid, image]})")
        lines[grid, image] = line
        grids.setdefault(grid, []).append(image)
    if not grids:
        raise GridsError(f"{where}: no grid rows")
    for grid, images in grids.items():
        if len(images) < 2:
            raise GridsError(f"{where} line {lines[grid, images[0]]}: grid {grid} has only one image, "
                             "so an answer to it gives no pairs")
    return {grid: tuple(images) for grid, images in grids.items()}, lines


def find_images(grids: dict[str, tuple[str, ...]], lines: dict[tuple[str, str], int], images_dir,
                grids_file: Path) -> dict[str, Path]:
    """Each image id's file (module docstring); the first missing one stops with one line."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise GridsError(f"{folder}: no such folder (--images)")
    root = folder.resolve()
    files: dict[str, Path] = {}
    stems: dict[Path, dict[str, list[Path]]] = {}  # each folder listed once, not once per image
    missing = []
    for grid, images in grids.items():
        for image in images:
            if image not in files:
                found = _find_image(root, image, stems)
                if found is None:
                    missing.append((grid, image))
                else:
                    files[image] = found
    if missing:
        grid, image = missing[0]
        more = len({i for _, i in missing}) - 1
        raise GridsError(f"image {image} (grid {grid}, {grids_file} line {lines[grid, image]}) has no file "
                         f"{image} or {image}.* in {folder}" + (f" (and {more} more images missing)" if more else ""))
    return files


def _find_image(root: Path, image_id: str, stems: dict[Path, dict[str, list[Path]]]) -> Path | None:
    candidate = (root / image_id).resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        return None  # '../x' or an absolute path: never serve a file outside the folder
    if candidate.is_file():
        return candidate
    if not candidate.parent.is_dir():
        return None
    if candidate.parent not in stems:
        listing: dict[str, list[Path]] = {}
        for path in sorted(candidate.parent.iterdir()):
            if path.is_file():
                listing.setdefault(path.stem, []).append(path)
        stems[candidate.parent] = listing
    same_stem = stems[candidate.parent].get(candidate.name, [])
    if len(same_stem) > 1:
        raise GridsError(f"image {image_id}: {len(same_stem)} files in {candidate.parent} have that stem "
                         f"({', '.join(p.name for p in same_stem[:3])}); name the file in the grids file")
    return same_stem[0] if same_stem else None


def check_answer(grids: Grids, grid_id: str, groups: dict) -> dict[str, str]:
    """The answer's groups in the grid's image order, as text; ValueError (one line) if it is malformed.

    Groups are labels local to one answer ('1'..'10' from the page); a whole number and its text are
    one label, since the exported CSV holds text either way.
    """
    if grid_id not in grids.images:
        raise ValueError(f"unknown grid_id {grid_id!r}")
    images = grids.images[grid_id]
    for image, group in groups.items():
        if isinstance(group, bool) or not isinstance(group, (str, int)):
            raise ValueError(f"the group of image {image} must be text or a whole number, "
                             f"got {type(group).__name__} {group!r}")
        if not str(group).strip():
            raise ValueError(f"the group of image {image} is empty")
    missing = [i for i in images if i not in groups]
    if missing:
        raise ValueError(f"no group for {len(missing)} image(s) of grid {grid_id}: {_some(missing)}")
    extra = [i for i in groups if i not in set(images)]
    if extra:
        raise ValueError(f"{len(extra)} image(s) not in grid {grid_id}: {_some(extra)}")
    labels = {i: str(groups[i]).strip() for i in images}
    n_groups = len(set(labels.values()))
    if n_groups > MAX_GROUPS:
        raise ValueError(f"{n_groups} distinct groups; at most {MAX_GROUPS} are allowed")
    return labels


def _some(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")
