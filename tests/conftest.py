"""Shared fixtures: a tiny random Stable Diffusion folder (built once per session) and concept folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from concept_fixtures import CONCEPT_TOML, FROZEN_TOML, make_concept

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    from lego_inversion.testing import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


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


@pytest.fixture(scope="session")
def frozen_run(tiny_sd, tmp_path_factory) -> Path:
    """A two-token concept ('frozen' = <frozen> <ice>) learned with Textual Inversion."""
    return _train(tiny_sd, tmp_path_factory.mktemp("frozen"), FROZEN_TOML, method="ti", name="frozen_folder")
