"""The bundled concept folders' `with` templates leave the concept to the token: with the {concept} slot empty,
the toy model must not draw the concept (benchmarks/template_probe.py; docs/inversion_quality.md, (f)).

A template whose own words draw the concept's generic look ("a photo of a ball with {concept} arms": 11 of 12
images show both arms raised with the slot empty) makes the personalized look unreachable for any token."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("template_probe_module", ROOT / "benchmarks" / "template_probe.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)

FOLDERS = sorted(p.parent for p in [*(ROOT / "examples").glob("*/concept.toml"),
                                    *(ROOT / "benchmarks" / "heldout").glob("*/concept.toml")])
TARGETS = ["ball", "star", "bear", "cube"]


@pytest.fixture(scope="module")
def world():
    from lego_inversion.config import InversionConfig
    from lego_inversion.toyworld.oracle import Oracle
    from lego_inversion.trainer import load_training_backbone

    torch.manual_seed(0)
    return load_training_backbone(None, InversionConfig()), Oracle.load()


def _reading(world, template: str, truth: dict, words: str) -> dict:
    backbone, oracle = world
    return probe.slot_readings(backbone, oracle, template, truth, {"x": words}, TARGETS, n=2)["x"]


def test_the_probe_catches_a_template_that_draws_the_concept(world):
    truth = tomllib.loads((ROOT / "examples" / "waving_ball" / "concept.toml").read_text())["toyworld"]
    bad = _reading(world, "a photo of a {subject} with {concept} arms", truth, "")
    assert bad["concept"] >= 0.5, bad  # "arms" alone draws the generic raised arms
    assert bad["look"] <= 0.2, bad
    assert bad["prompt"] == "a photo of a star with arms"  # the empty slot leaves no double space


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_bundled_templates_leave_the_concept_to_the_token(world, folder):
    data = tomllib.loads((folder / "concept.toml").read_text())
    r = _reading(world, data["prompts"]["with"], data["toyworld"], "")
    assert r["concept"] <= 0.5, (folder.name, r)  # the plain prompt draws some concept in ~1 of 4 images
