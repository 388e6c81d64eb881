"""`lego toyworld evaluate-model`: the quality report is what its rows say, for all three prompt sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import pytest

from lego_inversion.errors import UserError
from lego_inversion.toyworld import BUNDLED_MODEL, MODEL_PARTS
from lego_inversion.toyworld.evaluate import EvaluateConfig, _model_folder, _variant_rate, evaluate_model, prompt_jobs
from lego_inversion.toyworld.render import CONCEPTS
from lego_inversion.toyworld.training_data import VARIANT_CAPTIONS


def _row(concept: str, seen_concept: str, seen_variant: int) -> dict:
    return {"concept": concept, "oracle": {"concept": seen_concept, "variant": seen_variant}}


def test_variant_rate_needs_concept_and_variant():
    rows = [_row("melted:1", "melted", 1), _row("melted:1", "melted", 0), _row("melted:1", "crumpled", 1),
            _row("count:1", "count", 1)]
    assert _variant_rate(rows) == 0.5  # by hand: hits 1, 0, 0, 1
    assert np.isnan(_variant_rate([]))


def test_report_matches_its_rows(tmp_path):
    out = tmp_path / "eval"
    res = evaluate_model(EvaluateConfig(n=1, steps=2, out=str(out)))
    rows, summary = res["rows"], res["summary"]
    assert json.loads((out / "report.json").read_text())["summary"] == summary
    assert (out / "grid.png").is_file()
    described = [r for r in rows if ":" in r["concept"]]
    assert sorted(r["concept"] for r in described) == sorted(f"{c}:{v}" for c, v in VARIANT_CAPTIONS)
    for r in described:  # the prompt is the variant's neutral description, never the concept's name
        c = r["concept"].split(":")[0]
        assert c.replace("_", " ") not in r["prompt"] and "photo of" in r["prompt"]
    plain = [r for r in rows if r["concept"] == "none"]
    generic = [r for r in rows if r["concept"] in CONCEPTS]
    assert len(plain) == 6 and len(generic) == len(CONCEPTS) == len(described)
    assert summary["plain_subject_acc"] == np.mean([r["oracle"]["subject"] == r["subject"] for r in plain])
    assert summary["generic_concept_present"] == np.mean([r["oracle"]["concept"] == r["concept"] for r in generic])
    assert summary["described_variant_present"] == _variant_rate(described)
    assert summary["n_samples"] == len(rows) == 18


def test_prompt_sets_are_seeded():
    jobs = prompt_jobs(2, seed=5)
    assert jobs == prompt_jobs(2, seed=5) and jobs != prompt_jobs(2, seed=6)
    assert len(jobs) == 2 * (6 + len(CONCEPTS) + len(VARIANT_CAPTIONS))


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="n must be >= 1"):
        EvaluateConfig(n=0)
    with pytest.raises(UserError, match="steps must be >= 1"):
        EvaluateConfig(steps=0)


def test_an_export_without_text_encoder_is_completed(tmp_path, monkeypatch):
    """A `model` folder of `lego toyworld train` has no bert/: evaluation adds it, other models pass as given."""
    monkeypatch.setenv("LEGO_CACHE", str(tmp_path / "cache"))
    export = tmp_path / "export"
    export.mkdir()
    for part in MODEL_PARTS:
        (export / part).symlink_to(BUNDLED_MODEL / part)
    folder = Path(_model_folder(str(export)))
    assert folder.parent == tmp_path / "cache" and (folder / "bert" / "config.json").is_file()
    assert not (export / "bert").exists()
    assert _model_folder(None) is None and _model_folder("some/hub-id") == "some/hub-id"
