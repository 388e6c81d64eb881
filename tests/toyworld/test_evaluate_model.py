"""`lego toyworld evaluate-model`: the quality report is what its rows say, for all three prompt sets."""

from __future__ import annotations

import json

import numpy as np

from lego_inversion.toyworld.data import VARIANT_CAPTIONS
from lego_inversion.toyworld.evaluate import _variant_rate, evaluate_model
from lego_inversion.toyworld.render import CONCEPTS


def _row(concept: str, seen_concept: str, seen_variant: int) -> dict:
    return {"concept": concept, "oracle": {"concept": seen_concept, "variant": seen_variant}}


def test_variant_rate_needs_concept_and_variant():
    rows = [_row("melted:1", "melted", 1), _row("melted:1", "melted", 0), _row("melted:1", "crumpled", 1),
            _row("count:1", "count", 1)]
    assert _variant_rate(rows) == 0.5  # by hand: hits 1, 0, 0, 1
    assert np.isnan(_variant_rate([]))


def test_report_matches_its_rows(tmp_path):
    out = tmp_path / "eval"
    res = evaluate_model(n=1, steps=2, out=out)
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
