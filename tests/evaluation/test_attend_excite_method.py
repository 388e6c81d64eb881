"""The `attend-excite` evaluation method: the text baseline's prompt with its target and description words excited
(Attend-and-Excite, Chefer et al. 2023), selected by name; planned, generated for real on the toy model, scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from eval_helpers import make_concept_folder, run_cli, write_images
from PIL import Image

from lego_inversion.evaluation.config import config_from_concept_folders
from lego_inversion.evaluation.plan import plan_records, resolve_concepts

MELTED = {"subject": "cube", "appearance": "checkered", "concept": "melted", "variant": 1, "count": 1}


def test_plan_only_when_asked_and_words(tmp_path):
    ex = write_images(tmp_path / "ex", 1)
    folder = make_concept_folder(tmp_path / "frozen", "frozen", "lego", ex, description="frozen in a block of ice",
                                 questions=["Is the {target} frozen?"])
    default = resolve_concepts(config_from_concept_folders([folder], targets=["toy bear"]))
    assert default[0].methods == ["lego", "text"]  # not run unless named: it costs extra UNet passes
    cfg = config_from_concept_folders([folder], targets=["toy bear"], methods=["text", "attend-excite"])
    [rc] = resolve_concepts(cfg)
    assert rc.methods == ["text", "attend-excite"]
    assert rc.excite_words("toy bear") == ["toy", "bear", "frozen", "block", "ice"]
    records = plan_records(cfg, [rc], tmp_path / "out")
    text = [r for r in records if r.method == "text"]
    excite = [r for r in records if r.method == "attend-excite"]
    assert [(r.prompt, r.seed) for r in excite] == [(r.prompt, r.seed) for r in text]
    assert excite[0].prompt == "a photo of a toy bear frozen in a block of ice"
    assert excite[0].to_json()["excite"] == ["toy", "bear", "frozen", "block", "ice"]


def test_evaluate_attend_excite_on_the_toy_model(tmp_path):
    ex = write_images(tmp_path / "ex", 1)
    folder = make_concept_folder(tmp_path / "melted", "melted", "lego", ex, toyworld=MELTED)
    out = tmp_path / "out"
    assert run_cli(["evaluate", "--concept", str(folder), "--target", "ball", "--num-images", "2", "--steps", "3",
                    "--methods", "text,attend-excite", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == ["text", "attend-excite"] and report["settings"]["metrics"] == ["oracle"]
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["attend-excite"]["metrics"]["oracle_concept"]["n"] == 2

    def images(method: str) -> dict[int, tuple[dict, np.ndarray]]:
        folder: Path = out / "images" / "melted" / method
        lines = [json.loads(x) for x in (folder / "images.jsonl").read_text().splitlines()]
        return {m["seed"]: (m, np.asarray(Image.open(folder / m["file"]), dtype=np.int16)) for m in lines}

    text, excite = images("text"), images("attend-excite")
    assert sorted(text) == sorted(excite) == [0, 1]
    for seed in text:
        (mt, a), (me, b) = text[seed], excite[seed]
        assert mt["prompt"] == me["prompt"] == "a photo of a ball melted"
        assert me["excite"] == ["ball", "melted"] and "excite" not in mt
        assert np.abs(a - b).max() > 0, seed  # the same noise, moved by the excitation
