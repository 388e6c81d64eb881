"""Grids of the toy-world ablation (`toyworld_ablation.py`): one row per cell, and one sheet per method.

    save_cell_grid(out / "grids" / "cells" / "melted_cube-lego-0.png", example, images, per_target=6)
    save_method_grids(out, cells, ["ti", "lego"])   # grids/<method>.png: each method's first seed, a row per concept
"""

from __future__ import annotations

from pathlib import Path

GRID_PER_TARGET = 4  # images of each target subject shown in a grid row


def save_cell_grid(path: Path, example: Path, images: list, per_target: int) -> None:
    """One grid row: the exemplar's with/ images, then the first GRID_PER_TARGET images of each target."""
    from lego_inversion.atomic import atomic_save_image
    from lego_inversion.images import load_image
    from lego_inversion.toyworld.render import grid

    size = images[0].size
    row = [load_image(p, size=size[0]) for p in sorted((example / "with").iterdir())]
    row += [im for i, im in enumerate(images) if i % per_target < GRID_PER_TARGET]
    atomic_save_image(path, grid(row, cols=len(row)))


def save_method_grids(out: Path, cells: list[dict], methods: list[str]) -> list[Path]:
    """grids/<method>.png: the cell grids of each method's first seed, one concept per row."""
    from PIL import Image

    from lego_inversion.atomic import atomic_save_image

    written = []
    for m in methods:
        seeds = [c["seed"] for c in cells if c["method"] == m]
        if not seeds:
            continue
        first = min(seeds)
        concepts = sorted(c["concept"] for c in cells if c["method"] == m and c["seed"] == first)
        files = [out / "grids" / "cells" / f"{k}-{m}-{first}.png" for k in concepts]
        rows = [Image.open(f).convert("RGB") for f in files if f.is_file()]
        if rows:
            sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (255, 255, 255))
            y = 0
            for r in rows:
                sheet.paste(r, (0, y))
                y += r.height
            atomic_save_image(out / "grids" / f"{m}.png", sheet)
            written.append(out / "grids" / f"{m}.png")
    return written
