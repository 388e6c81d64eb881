"""Helpers shared by the backbone tests: concept folders and frozen-weight snapshots."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
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
subjects = ["teddy bear"]
"""

FAST = dict(steps=2, checkpoint_every=2, validation_steps=1, validation_images=1)


def make_concept(root: Path, toml: str = CONCEPT_TOML) -> Path:
    """Two 'with' images (square + puddle) and two 'without' images (square) + concept.toml."""
    (root / "with").mkdir(parents=True)
    (root / "without").mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        for sub, melted in (("with", True), ("without", False)):
            arr = np.full((24, 24, 3), 255, np.uint8)
            arr[6:18, 6:18] = colour
            if melted:
                arr[17:22, 3:21] = colour
            Image.fromarray(arr).save(root / sub / f"{sub}{i}.png")
    (root / "concept.toml").write_text(textwrap.dedent(toml))
    return root


def snapshot(backbone) -> dict[str, torch.Tensor]:
    """Every frozen weight of the backbone (all but the new token rows)."""
    state = {}
    modules = [("unet", backbone.unet), ("vae", backbone.vae)] + [(s.name, s.encoder) for s in backbone.slots]
    for name, module in modules:
        for key, value in module.state_dict().items():
            if ".extra" not in key:
                state[f"{name}.{key}"] = value.detach().clone()
    return state


def assert_only_new_rows_changed(before: dict, after: dict) -> None:
    assert before.keys() == after.keys() and len(before) > 50
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"frozen weights changed: {changed[:5]}"
