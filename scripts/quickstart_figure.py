"""docs/quickstart.png: the README quick start's exemplars and generated images in one row.

    lego invert examples/melted_cube --out runs/melted && lego generate --concept runs/melted \\
        --prompt "a photo of a ball that is {concept}" --out gen/melted          # the README's quick start
    python3 scripts/quickstart_figure.py examples/melted_cube gen/melted docs/quickstart.png

Left to right: the concept folder's without/ images, its with/ images, a gap, then every image of the generate
folder (in images.jsonl order).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

TILE = 128  # pixels per image in the figure
GAP = 2     # between images
SPLIT = 128  # between the exemplars and the generated images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("concept_dir")
    ap.add_argument("generate_dir")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    from lego_inversion.atomic import atomic_save_image
    from lego_inversion.errors import UserError
    from lego_inversion.images import list_images
    from lego_inversion.manifest import MANIFEST, read_manifest

    concept, generated = Path(args.concept_dir), Path(args.generate_dir)
    exemplars = [p for kind in ("without", "with") for p in list_images(concept / kind)]
    try:
        records = read_manifest(generated / MANIFEST)
    except UserError as exc:
        print(f"quickstart_figure: error: {exc}", file=sys.stderr)
        return 2
    if not exemplars or not records:
        print(f"quickstart_figure: error: no images in {concept} or {generated}", file=sys.stderr)
        return 2
    images = [Image.open(p).convert("RGB") for p in exemplars]
    made = [Image.open(r.path).convert("RGB") for r in records]  # paths resolved by read_manifest
    width = (len(images) + len(made)) * (TILE + GAP) + SPLIT
    sheet = Image.new("RGB", (width, TILE), (255, 255, 255))
    x = 0
    for i, im in enumerate(images + made):
        if i == len(images):
            x += SPLIT
        sheet.paste(im.resize((TILE, TILE), Image.LANCZOS), (x, 0))
        x += TILE + GAP
    atomic_save_image(Path(args.out), sheet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
