"""Fixtures for the evaluation tests: tiny evaluator models (built once per session) and the stand-in generator."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import eval_helpers
import tiny_models


@pytest.fixture
def fake_generation(monkeypatch):
    """`lego_inversion.generation` replaced by the stand-in; yields the list of recorded calls."""
    monkeypatch.setitem(sys.modules, "lego_inversion.generation", eval_helpers.fake_generation_module())
    eval_helpers.CALLS.clear()
    return eval_helpers.CALLS


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Paths of the tiny evaluator models saved with save_pretrained."""
    base = tmp_path_factory.mktemp("tiny_models")
    return {
        "vqa": tiny_models.build_blip2(base / "blip2-t5", "t5"),
        "vqa_opt": tiny_models.build_blip2(base / "blip2-opt", "opt"),
        "detector": tiny_models.build_owlv2(base / "owlv2"),
        "clip": tiny_models.build_clip(base / "clip"),
        "dino": tiny_models.build_dino(base / "dino"),
    }
