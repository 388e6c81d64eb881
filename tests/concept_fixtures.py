"""Plain helpers shared by tests (and benchmarks): concept folders with synthetic images.

Kept out of conftest.py so that test modules can import them by a unique module name.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

CONCEPT_TOML = """
[subject]
init = "cube"

[[concept]]
token = "<melted>"
init = "melted"
positives = ["melted", "molten", "dripping"]
negatives = ["solid", "intact", "frozen"]

[prompts]
without = "a photo of a {subject}"
with = "a photo of a {subject} that is {concept}"

[validation]
subjects = ["teddy bear", "sphere"]

[evaluation]
questions = ["Is the {target} melted?"]
"""


def write_square(path: Path, colour, size: int = 24, blob: bool = False) -> None:
    arr = np.full((size, size, 3), 255, np.uint8)
    arr[6:18, 6:18] = colour
    if blob:  # "melted": a puddle under the square
        arr[17:22, 3:21] = colour
    Image.fromarray(arr).save(path)


def make_concept(root: Path, toml: str = CONCEPT_TOML) -> Path:
    (root / "with").mkdir(parents=True)
    (root / "without").mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        write_square(root / "with" / f"w{i}.png", colour, blob=True)
        write_square(root / "without" / f"n{i}.png", colour)
    (root / "concept.toml").write_text(textwrap.dedent(toml))
    return root


FROZEN_TOML = (CONCEPT_TOML.replace('"<melted>"', '"<frozen>"').replace('init = "melted"', 'init = "frozen"')
               .replace('[prompts]', '[[concept]]\ntoken = "<ice>"\ninit = "ice"\npositives = ["ice"]\n'
                                     'negatives = ["fire"]\n\n[prompts]')
               .replace("[subject]", 'name = "frozen"\n[subject]'))


def snapshot(backbone) -> dict:
    """Every frozen weight of a backbone (all but the new token rows), cloned."""
    state = {}
    modules = [("unet", backbone.unet), ("vae", backbone.vae)] + [(s.name, s.encoder) for s in backbone.slots]
    for name, module in modules:
        for key, value in module.state_dict().items():
            if ".new.blocks." not in key:
                state[f"{name}.{key}"] = value.detach().clone()
    return state
