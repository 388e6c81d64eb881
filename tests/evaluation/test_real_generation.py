"""`lego evaluate` driving the real generation module: learned runs on the tiny SD model (shared fixtures)."""

from __future__ import annotations

import json

import numpy as np
from eval_helpers import run_cli
from PIL import Image


def test_evaluate_learned_runs_with_real_generator(tmp_path, tiny, melted_run, frozen_run, tiny_sd):
    out = tmp_path / "out"
    argv = ["evaluate", "--concept", str(melted_run), "--concept", str(frozen_run), "--target", "teddy bear",
            "--num-images", "2", "--steps", "2", "--out", str(out), "--no-progress", "--model", str(tiny_sd),
            "--vqa-model", str(tiny["vqa"]), "--detector", str(tiny["detector"]), "--clip-model", str(tiny["clip"]),
            "--dino-model", str(tiny["dino"]), "--metrics", "vqa,clip,dino"]
    assert run_cli(argv) == 0
    melted = json.loads((melted_run / "concept.json").read_text())
    frozen = json.loads((frozen_run / "concept.json").read_text())
    report = json.loads((out / "report.json").read_text())
    rows = {(r["concept"], r["method"]): r for r in report["rows"]}
    assert set(rows) == {(melted["name"], melted["method"]), (melted["name"], "text"),
                         (frozen["name"], frozen["method"]), (frozen["name"], "text")}
    for row in rows.values():
        assert row["n_images"] == 2 and row["targets"] == ["teddy bear"]
        assert row["metrics"]["vqa"]["n"] == 2
    # the learned tokens change the picture: method and text baseline differ at the same seed
    a = np.asarray(Image.open(out / "images" / melted["name"] / melted["method"] / "teddy-bear_s0.png"))
    b = np.asarray(Image.open(out / "images" / melted["name"] / "text" / "teddy-bear_s0.png"))
    assert a.shape == b.shape and not np.array_equal(a, b)
