"""The ablation benchmark's scoring (benchmarks/toyworld_ablation.py), checked against hand computations."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "toyworld_ablation.py"
_spec = importlib.util.spec_from_file_location("toyworld_ablation", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

TRUTH = {"subject": "cube", "appearance": "checkered", "concept": "melted", "variant": 1, "count": 1}


def _pred(**kw):
    return {"subject": "ball", "appearance": "red", "concept": "melted", "variant": 1, "count": 1} | kw


def test_score_single_images():
    assert bench.score(_pred(), TRUTH, "ball") == {"success": 1.0, "leakage": 0.0, "fidelity": 1.0}
    assert bench.score(_pred(variant=0), TRUTH, "ball")["success"] == 0.0  # generic variant is not the concept
    assert bench.score(_pred(appearance="checkered"), TRUTH, "ball")["leakage"] == 1.0
    assert bench.score(_pred(subject="cube"), TRUTH, "ball") == {"success": 1.0, "leakage": 1.0, "fidelity": 0.0}
    three = TRUTH | {"concept": "count", "count": 3}
    assert bench.score(_pred(concept="count", count=3), three, "ball")["success"] == 1.0
    assert bench.score(_pred(concept="count", count=4), three, "ball")["success"] == 0.0


def test_win_rate_by_hand():
    a = {("k", 0): 0.5, ("k", 1): 0.2, ("j", 0): 0.9}
    b = {("k", 0): 0.1, ("k", 1): 0.2, ("j", 0): 1.0}
    assert bench.win_rate(a, b) == pytest.approx((1 + 0.5 + 0) / 3)
    assert bench.win_rate(b, a) == pytest.approx((0 + 0.5 + 1) / 3)


def test_bootstrap_ci_brackets_the_mean():
    mean, lo, hi = bench.bootstrap_ci([0.0, 1.0] * 20)
    assert mean == 0.5 and lo < 0.5 < hi and hi - lo < 0.5
    # normal approximation for the mean of 40 fair coins: half-width 1.96 * 0.5 / sqrt(40) = 0.155
    assert (hi - lo) / 2 == pytest.approx(1.96 * 0.5 / np.sqrt(40), abs=0.04)
    assert bench.bootstrap_ci([0.3, 0.3, 0.3]) == (0.3, 0.3, 0.3)


def test_summary_table_lists_every_method():
    cells = [{"concept": "k", "method": m, "seed": s, "success": v, "leakage": 0.0, "fidelity": 1.0}
             for m, v in (("ti", 0.0), ("lego", 1.0)) for s in (0, 1)]
    summary, table = bench.summarize(cells, ["ti", "lego"])
    assert summary["win_rates"]["lego>ti"] == 1.0 and summary["win_rates"]["ti>lego"] == 0.0
    assert "| lego | 1.00 [1.00, 1.00]" in table and "| ti | 0.00 [0.00, 0.00]" in table
