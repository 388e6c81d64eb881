"""The toy-world concept splits outside examples/: held-out (no default is tuned on it) and dev (a second tuning split).

    PYTHONPATH=src python3 benchmarks/concept_splits.py                       # both, deterministic
    PYTHONPATH=src python3 benchmarks/concept_splits.py --split dev --out /tmp/dev

Same machinery as `lego toyworld make-examples` (toyworld/examples.py: `Example`, `concept_toml`, `scenes`),
with other subjects, plain-colour as well as checkered exemplars, other concept/subject pairings, other image
seeds and other counts than examples/*, and than each other:
  heldout  benchmarks/heldout/  no default is chosen on it; every report lists it separately.
  dev      benchmarks/dev/      a second tuning split: defaults may be chosen on examples/ and dev/ together, so
                                a lever that held-out suggests is confirmed on fresh concepts, not on held-out
                                (docs/inversion_quality.md (ab)).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lego_inversion.toyworld.examples import Example, Token, write_example  # noqa: E402

HELDOUT = (
    Example("melted_star_red", "star", "melted", 1,
            (Token("<melted>", "melted", ("melted", "molten", "dripping"), ("solid", "intact", "frozen")),),
            "a photo of a {subject} that is {concept}", "Is the {target} melted?", appearance="red",
            seeds=(41, 42), validation=("cube", "ball")),
    Example("frozen_ball_blue", "ball", "frozen", 1,
            (Token("<frozen>", "frozen", ("frozen", "icy", "cold"), ("melted", "hot", "warm")),),
            "a photo of a {subject} that is {concept}", "Is the {target} frozen?", appearance="blue",
            seeds=(43, 44), validation=("cube", "star")),
    Example("crumpled_cube_checkered", "cube", "crumpled", 1,
            (Token("<crumpled>", "crumpled", ("crumpled", "folded", "squashed"), ("smooth", "flat", "neat")),),
            "a photo of a {subject} that is {concept}", "Is the {target} crumpled?", seeds=(45, 46),
            validation=("ball", "star")),
    Example("sleeping_bear_yellow", "bear", "sleeping", 1,
            (Token("<sleeping>", "sleeping", ("sleeping", "asleep", "dozing"), ("awake", "alert", "open")),),
            "a photo of a {subject} that is {concept}", "Are the {target}'s eyes closed?", appearance="yellow",
            seeds=(47, 48), validation=("ball", "star")),
    Example("waving_heart_checkered", "heart", "arms_raised", 1,
            (Token("<raised>", "raised", ("raised", "lifted", "waving"), ("lowered", "down", "folded")),),
            "a photo of a {subject} with {concept}", "Are the {target}'s arms raised?", seeds=(49, 50),
            validation=("ball", "star")),
    Example("four_pyramids_purple", "pyramid", "count", 1,
            (Token("<four>", "four", ("four", "quadruple", "quartet"), ("one", "two", "three", "five")),),
            "a photo of {concept} {subject}", "How many {target}s are there?", count=4, appearance="purple",
            seeds=(51, 52), validation=("ball", "star")),
)

# Pairings, appearances and seeds (61-72) unused by examples/ and benchmarks/heldout/; the count is two.
DEV = (
    Example("melted_bear_green", "bear", "melted", 1,
            (Token("<melted>", "melted", ("melted", "molten", "dripping"), ("solid", "intact", "frozen")),),
            "a photo of a {subject} that is {concept}", "Is the {target} melted?", appearance="green",
            seeds=(61, 62), validation=("cube", "star")),
    Example("frozen_pyramid_yellow", "pyramid", "frozen", 1,
            (Token("<frozen>", "frozen", ("frozen", "icy", "cold"), ("melted", "hot", "warm")),),
            "a photo of a {subject} that is {concept}", "Is the {target} frozen?", appearance="yellow",
            seeds=(63, 64), validation=("ball", "heart")),
    Example("crumpled_star_checkered", "star", "crumpled", 1,
            (Token("<crumpled>", "crumpled", ("crumpled", "folded", "squashed"), ("smooth", "flat", "neat")),),
            "a photo of a {subject} that is {concept}", "Is the {target} crumpled?", seeds=(65, 66),
            validation=("ball", "cube")),
    Example("sleeping_ball_purple", "ball", "sleeping", 1,
            (Token("<sleeping>", "sleeping", ("sleeping", "asleep", "dozing"), ("awake", "alert", "open")),),
            "a photo of a {subject} that is {concept}", "Are the {target}'s eyes closed?", appearance="purple",
            seeds=(67, 68), validation=("cube", "star")),
    Example("waving_cube_red", "cube", "arms_raised", 1,
            (Token("<raised>", "raised", ("raised", "lifted", "waving"), ("lowered", "down", "folded")),),
            "a photo of a {subject} with {concept}", "Are the {target}'s arms raised?", appearance="red",
            seeds=(69, 70), validation=("ball", "star")),
    Example("two_hearts_checkered", "heart", "count", 1,
            (Token("<two>", "two", ("two", "double", "pair"), ("one", "three", "four", "five")),),
            "a photo of {concept} {subject}", "How many {target}s are there?", count=2, seeds=(71, 72),
            validation=("ball", "star")),
)

SPLITS = {"heldout": HELDOUT, "dev": DEV}


def make_split(split: str, out: str | Path | None = None) -> list[Path]:
    """(Re)build a split's concept folders under `out` (default benchmarks/<split>; each folder swapped into
    place whole); returns them."""
    out = Path(out) if out is not None else ROOT / "benchmarks" / split
    return [write_example(out / ex.name, ex, made_by="`benchmarks/concept_splits.py`") for ex in SPLITS[split]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=list(SPLITS), nargs="*", default=list(SPLITS))
    ap.add_argument("--out", help="folder for the concepts (default benchmarks/<split>; only with one --split)")
    args = ap.parse_args(argv)
    if args.out and len(args.split) != 1:
        ap.error("--out needs exactly one --split")
    for split in args.split:
        for path in make_split(split, args.out):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
