"""Small demo grids: PNG images of coloured shapes and a grids file, for the tests, the load test
and a first look at the page (``write_demo``). A shape and a colour are two attributes a person
can sort by, as the paper's simulated grids have."""

from __future__ import annotations

import csv
import random
from pathlib import Path

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {"red": "#d62728", "blue": "#1f77b4", "green": "#2ca02c", "orange": "#ff7f0e", "purple": "#9467bd",
           "grey": "#7f7f7f"}


def write_images(folder, n_images: int = 24) -> list[str]:
    """``n_images`` 96x96 PNGs named ``<shape>-<colour>-<k>.png``; their ids (file names)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patches

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    fig = plt.figure(figsize=(1, 1), dpi=96)
    for k in range(n_images):
        shape, colour = SHAPES[k % len(SHAPES)], list(COLOURS)[(k // len(SHAPES)) % len(COLOURS)]
        fig.clear()
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.axis("off")
        face = COLOURS[colour]
        if shape == "circle":
            ax.add_patch(patches.Circle((0.5, 0.5), 0.35, color=face))
        elif shape == "square":
            ax.add_patch(patches.Rectangle((0.17, 0.17), 0.66, 0.66, color=face))
        elif shape == "triangle":
            ax.add_patch(patches.RegularPolygon((0.5, 0.45), 3, radius=0.4, color=face))
        else:
            ax.add_patch(patches.RegularPolygon((0.5, 0.5), 5, radius=0.38, color=face))
        ax.text(0.04, 0.04, str(k), fontsize=7, color="black")
        name = f"{shape}-{colour}-{k}.png"
        fig.savefig(folder / name, dpi=96)
        ids.append(name)
    plt.close(fig)
    return ids


def write_grids(path, image_ids: list[str], n_grids: int, grid_size: int = 24, seed: int = 0) -> Path:
    """A grids file of ``n_grids`` grids, each ``grid_size`` distinct images drawn from ``image_ids``."""
    rng = random.Random(seed)
    path = Path(path)
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["grid_id", "image_id"])
        for g in range(n_grids):
            for image in rng.sample(image_ids, grid_size):
                writer.writerow([f"g{g:03d}", image])
    return path


def write_demo(folder, n_grids: int = 3, grid_size: int = 24, n_images: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """Images in ``folder/images`` and ``folder/grids.csv``; (grids file, images folder)."""
    folder = Path(folder)
    ids = write_images(folder / "images", n_images)
    return write_grids(folder / "grids.csv", ids, n_grids, grid_size, seed), folder / "images"
