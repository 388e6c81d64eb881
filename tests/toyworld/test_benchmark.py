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
    assert bench.score(_pred(), TRUTH, "ball") == {"success": 1.0, "leakage": 0.0, "fidelity": 1.0, "clean": 1.0}
    assert bench.score(_pred(variant=0), TRUTH, "ball")["success"] == 0.0  # generic variant is not the concept
    assert bench.score(_pred(appearance="checkered"), TRUTH, "ball")["leakage"] == 1.0
    assert bench.score(_pred(subject="cube"), TRUTH, "ball") == {"success": 1.0, "leakage": 1.0, "fidelity": 0.0,
                                                                 "clean": 0.0}
    assert bench.score(_pred(appearance="checkered"), TRUTH, "ball")["clean"] == 0.0  # a hit, but it leaks
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
    cells = [{"concept": "k", "method": m, "seed": s, "success": v, "leakage": 0.0, "fidelity": 1.0, "clean": c}
             for m, v, c in (("ti", 0.0, 0.5), ("lego", 1.0, 0.5)) for s in (0, 1)]
    summary, table = bench.summarize(cells, ["ti", "lego"])
    assert summary["win_rates"]["success"]["lego>ti"] == 1.0 and summary["win_rates"]["success"]["ti>lego"] == 0.0
    assert summary["win_rates"]["clean"]["lego>ti"] == 0.5  # equal clean-hit rates: ties
    assert "| lego | 1.00 [1.00, 1.00]" in table and "| ti | 0.00 [0.00, 0.00]" in table


def test_method_grids_stack_one_row_per_concept(tmp_path):
    """A cell grid shows the exemplar's with/ images then GRID_PER_TARGET images per target; the method grid
    stacks the first seed's cell grids, one concept per row, and ignores other seeds."""
    from PIL import Image

    example = tmp_path / "ex"
    (example / "with").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64), (255, 0, 0)).save(example / "with" / f"{i}.png")
    colours = [(0, 0, 10 * i) for i in range(12)]  # 2 targets x 6 images, distinguishable
    images = [Image.new("RGB", (64, 64), c) for c in colours]
    out = tmp_path / "out"
    cells = []
    for concept in ("a", "b"):
        for seed in (0, 1):
            bench.save_cell_grid(out / "grids" / "cells" / f"{concept}-lego-{seed}.png", example, images, 6)
            cells.append({"concept": concept, "method": "lego", "seed": seed})
    cell = Image.open(out / "grids" / "cells" / "a-lego-0.png").convert("RGB")
    n = 2 + 2 * bench.GRID_PER_TARGET
    assert cell.size == (n * 66 + 2, 68)
    # column 2 is the first generated image (colour 0), column 2 + GRID_PER_TARGET the second target's first (60)
    assert cell.getpixel((2 + 1 * 66 + 30, 30)) == (255, 0, 0)
    assert cell.getpixel((2 + 2 * 66 + 30, 30)) == (0, 0, 0)
    assert cell.getpixel((2 + (2 + bench.GRID_PER_TARGET) * 66 + 30, 30)) == (0, 0, 60)
    (written,) = bench.save_method_grids(out, cells, ["lego", "ti"])
    assert written == out / "grids" / "lego.png"
    assert Image.open(written).size == (cell.width, 2 * cell.height)


def test_config_overrides_are_typed_and_checked():
    got = bench.parse_overrides(["learning_rate=1e-2", "subject_from_with=false", "batch_size=4"])
    assert got == {"learning_rate": 0.01, "subject_from_with": False, "batch_size": 4}
    assert isinstance(got["batch_size"], int)
    for bad in (["learning_rate"], ["no_such_field=1"], ["steps=10"], ["subject_from_with=maybe"]):
        with pytest.raises(ValueError):
            bench.parse_overrides(bad)
    assert bench.main(["--set", "bogus=1", "--out", "unused"]) == 2


def test_rescore_recomputes_metrics_from_saved_predictions():
    """Cells saved before a metric existed get it from their oracle predictions, in generation order."""
    import argparse

    args = argparse.Namespace(targets=["ball", "cube", "star"], images=2)
    targets = bench.cell_targets(TRUTH, args)
    assert targets == ["ball", "ball", "star", "star"]  # the exemplar's own subject is never a target
    preds = [_pred(), _pred(appearance="checkered"), _pred(subject="star"), _pred(subject="ball", variant=0)]
    cell = bench.rescore({"predictions": preds, "success": -1.0}, TRUTH, targets)
    # by hand: success 1,1,1,0; leakage 0,1,0,0; fidelity 1,1,1,0; clean 1,0,1,0
    assert (cell["success"], cell["leakage"], cell["fidelity"], cell["clean"]) == (0.75, 0.25, 0.75, 0.5)
    with pytest.raises(ValueError):
        bench.rescore({"predictions": preds[:3]}, TRUTH, targets)


def test_with_prompts_fill_subject_and_concept_through_the_template_module():
    from lego_inversion.errors import UserError

    got = bench.with_prompts("a photo of a {subject} that is {concept}", ["ball", "star"], "<frozen> <ice>", "t")
    assert got == ["a photo of a ball that is <frozen> <ice>", "a photo of a star that is <frozen> <ice>"]
    assert bench.with_prompts("{{literal}} {subject}", ["cube"], "<c>", "t") == ["{literal} cube"]
    with pytest.raises(UserError, match=r"ex/concept.toml: prompts.with: unknown placeholder \{colour\}"):
        bench.with_prompts("a {colour} {subject}", ["ball"], "<c>", "ex/concept.toml: prompts.with")
    with pytest.raises(UserError, match=r"must contain \{subject\}"):
        bench.with_prompts("a photo of {concept}", ["ball"], "<c>", "t")


def test_missing_cells_are_trained_together_and_saved_cells_are_skipped(tmp_path, monkeypatch):
    """All inversions the ablation still needs go to one batched `invert_cells` call (run folders named as
    `lego invert` sweeps name them); cells already saved and the text baseline are not retrained."""
    import argparse

    import lego_inversion.sweep as sweep

    calls = []
    monkeypatch.setattr(sweep, "invert_cells", lambda cells, **kw: calls.append((cells, kw)))
    args = argparse.Namespace(out=str(tmp_path), set={"learning_rate": 0.02}, steps=7, model=None)
    ex = tmp_path / "melted_cube"
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "melted_cube-ti-0.json").write_text("{}")
    bench.train_missing([(ex, "text", 0), (ex, "ti", 0), (ex, "lego", 0), (ex, "lego", 1)], args)
    (cells, kw), = calls
    assert [(c[1].method, c[1].seed, c[1].steps, c[1].learning_rate) for c in cells] == [("lego", 0, 7, 0.02),
                                                                                      ("lego", 1, 7, 0.02)]
    assert [c[2].name for c in cells] == ["melted_cube-lego-s0", "melted_cube-lego-s1"]
    assert kw["resume"] is True
    args.steps = None  # the model's default steps, resolved when the run is built
    assert bench.cell_config("ti", 0, args).steps is None
