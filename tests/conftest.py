"""Shared fixtures: a tiny random Stable Diffusion folder (built once per session) and concept folders."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from lego_inversion.testing import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


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


@pytest.fixture
def concept_dir(tmp_path) -> Path:
    return make_concept(tmp_path / "melted")


def _train(tiny_sd, root, toml, method="lego", name="melted"):
    from lego_inversion.config import InversionConfig
    from lego_inversion.trainer import invert

    concept = make_concept(root / name, toml)
    config = InversionConfig(method=method, steps=2, checkpoint_every=2, validation_steps=1, validation_images=1)
    return invert(concept, root / "run", config, model=str(tiny_sd), progress=False)


@pytest.fixture(scope="session")
def melted_run(tiny_sd, tmp_path_factory) -> Path:
    """A finished (2-step) lego run of the 'melted' concept on the tiny SD model."""
    return _train(tiny_sd, tmp_path_factory.mktemp("melted"), CONCEPT_TOML)


FROZEN_TOML = (CONCEPT_TOML.replace('"<melted>"', '"<frozen>"').replace('init = "melted"', 'init = "frozen"')
               .replace('[prompts]', '[[concept]]\ntoken = "<ice>"\ninit = "ice"\npositives = ["ice"]\n'
                                     'negatives = ["fire"]\n\n[prompts]')
               .replace("[subject]", 'name = "frozen"\n[subject]'))


@pytest.fixture(scope="session")
def frozen_run(tiny_sd, tmp_path_factory) -> Path:
    """A two-token concept ('frozen' = <frozen> <ice>) learned with Textual Inversion."""
    return _train(tiny_sd, tmp_path_factory.mktemp("frozen"), FROZEN_TOML, method="ti", name="frozen_folder")
