"""The held-out toy-world concepts: a second split that no trainer default is tuned on.

    PYTHONPATH=src python3 benchmarks/heldout_concepts.py --out benchmarks/heldout   # deterministic

Same machinery as `lego toyworld make-examples` (toyworld/examples.py: `Example`, `concept_toml`, `scenes`),
but other subjects, plain-colour as well as checkered exemplars, other concept/subject pairings, other image
seeds and other counts than examples/*. Defaults are chosen on examples/ only; every report lists this split
separately (docs/inversion_quality.md, docs/toyworld_benchmark.md).
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


def make_heldout(out: str | Path = ROOT / "benchmarks" / "heldout") -> list[Path]:
    """(Re)build the held-out concept folders under `out` (each swapped into place whole); returns them."""
    out = Path(out)
    made = []
    for ex in HELDOUT:
        made.append(write_example(out / ex.name, ex, made_by="`benchmarks/heldout_concepts.py`"))
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "heldout"))
    args = ap.parse_args(argv)
    for path in make_heldout(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
