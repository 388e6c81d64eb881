"""What the oracle reads where a generated image misses the look: another concept, no concept, the count's pile
with another number, or the concept's generic variant (docs/inversion_quality.md (ag)).

    python3 benchmarks/miss_kinds.py runs/base_ex runs/seeds9_ex [--method lego] [--json FILE]

Reads toyworld_ablation.py cells (`cells/*.json`, their `predictions`) and each concept's truth from its folder's
concept.toml `[toyworld]` table (examples/, benchmarks/heldout/ or benchmarks/dev/, found by name). A later folder's
cell replaces an earlier one's for the same concept and seed. Prints, per split and per concept, the share of images
of each kind, and for "another concept" which one.
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_common import SPLIT_FOLDERS, split_of
from toyworld_ablation import load_cells, shows_look

KINDS = ("look", "another concept", "no concept", "pile, another number", "generic variant")


def kind(pred: dict, truth: dict) -> str:
    """One image's reading against the exemplar's look -> one of KINDS."""
    if shows_look(pred, truth):
        return "look"
    if pred["concept"] == truth["concept"]:
        return "pile, another number" if pred["variant"] == truth["variant"] else "generic variant"
    return "no concept" if pred["concept"] == "none" else "another concept"


@functools.cache
def truth_of(name: str) -> tuple[str, dict]:
    """A concept's split and its concept.toml `[toyworld]` ground truth, by name."""
    split = split_of(name)
    return split, tomllib.loads((SPLIT_FOLDERS[split] / name / "concept.toml").read_text())["toyworld"]


def tally(cells: dict[tuple[str, int], dict]) -> dict[str, dict[str, collections.Counter]]:
    """split -> concept -> Counter of kinds (and "other:<concept>" for each other concept read)."""
    out: dict[str, dict[str, collections.Counter]] = collections.defaultdict(dict)
    for (name, _seed), cell in sorted(cells.items()):
        split, truth = truth_of(name)
        counts = out[split].setdefault(name, collections.Counter())
        for pred in cell["predictions"]:
            k = kind(pred, truth)
            counts[k] += 1
            if k == "another concept":
                counts[f"other:{pred['concept']}"] += 1
    return out


def shares(counts: collections.Counter) -> dict[str, float]:
    n = sum(counts[k] for k in KINDS)
    return {k: counts[k] / n for k in sorted(counts, key=lambda k: (k not in KINDS, -counts[k]))}


def report(table: dict[str, dict[str, collections.Counter]]) -> str:
    lines = ["| split / concept | images | " + " | ".join(KINDS) + " | most read other concept |",
             "|---" * (len(KINDS) + 3) + "|"]
    for split, concepts in table.items():
        for name, counts in [(split, sum(concepts.values(), collections.Counter())), *sorted(concepts.items())]:
            others = [(k.split(":", 1)[1], v) for k, v in counts.most_common() if k.startswith("other:")]
            n = sum(counts[k] for k in KINDS)
            top = f"{others[0][0]} {others[0][1] / n:.2f}" if others else "–"
            label = f"**{name}**" if name == split else name
            lines.append(f"| {label} | {n} | " + " | ".join(f"{counts[k] / n:.2f}" for k in KINDS) + f" | {top} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="toyworld_ablation.py output folders (their cells/)")
    ap.add_argument("--method", default="lego")
    ap.add_argument("--json", type=Path, default=None, help="also write the shares here")
    args = ap.parse_args(argv)
    missing = [str(f) for f in args.folders if not (f / "cells").is_dir()]
    cells = load_cells(args.folders, args.method)
    if missing or not cells:
        print(f"miss_kinds: error: no {args.method} cells in {', '.join(missing) or 'these folders'}; pass "
              "toyworld_ablation.py --out folders", file=sys.stderr)
        return 2
    table = tally(cells)
    print(report(table), end="")
    if args.json is not None:
        from lego_inversion.atomic import atomic_write_json

        atomic_write_json(args.json, {s: {c: shares(v) for c, v in t.items()} for s, t in table.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
