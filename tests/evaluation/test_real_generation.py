"""`lego evaluate` driving the real generation module: learned runs on the tiny SD model (shared fixtures)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from eval_helpers import run_cli
from PIL import Image

from lego_inversion.manifest import read_manifest


def init_twin(run: Path, tiny_sd: Path, out: Path) -> Path:
    """A copy of a learned run whose rows are back at their initial values (the mean embedding of each token's
    init words, as the trainer starts them) and whose `method` is "init": the same concept, unlearned."""
    from lego_inversion.backbones import load_backbone
    from lego_inversion.formats import load_learned, save_learned

    learned = load_learned(run)
    spec = learned.meta["concept"]
    words = {spec["subject"]["token"]: spec["subject"]["init"]} | {c["token"]: c["init"] for c in spec["concept"]}
    slots = load_backbone(str(tiny_sd), device="cpu").slots
    vectors = {t: [slot.init_vector(words[t]) for slot in slots] for t in learned.vectors}
    for t in vectors:  # the premise: training moved every row away from its start
        assert not any(torch.equal(a, b) for a, b in zip(vectors[t], learned.vectors[t])), t
    shutil.copytree(run, out)
    save_learned(out, vectors, learned.slots, learned.meta | {"method": "init"})
    meta = json.loads((run / "concept.json").read_text())
    (out / "concept.json").write_text(json.dumps(meta | {"method": "init"}))
    return out


def test_evaluate_learned_runs_with_real_generator(tmp_path, tiny, melted_run, frozen_run, tiny_sd):
    out = tmp_path / "out"
    init = init_twin(melted_run, tiny_sd, tmp_path / "melted_init")
    argv = ["evaluate", "--concept", str(melted_run), "--concept", str(init), "--concept", str(frozen_run),
            "--target", "teddy bear", "--num-images", "2", "--steps", "2", "--out", str(out), "--no-progress",
            "--model", str(tiny_sd), "--vqa-model", str(tiny["vqa"]), "--detector", str(tiny["detector"]),
            "--clip-model", str(tiny["clip"]), "--dino-model", str(tiny["dino"]), "--metrics", "vqa,clip,dino"]
    assert run_cli(argv) == 0
    melted = json.loads((melted_run / "concept.json").read_text())
    frozen = json.loads((frozen_run / "concept.json").read_text())
    report = json.loads((out / "report.json").read_text())
    rows = {(r["concept"], r["method"]): r for r in report["rows"]}
    assert set(rows) == {(melted["name"], melted["method"]), (melted["name"], "init"), (melted["name"], "text"),
                         (frozen["name"], frozen["method"]), (frozen["name"], "text")}
    for row in rows.values():
        assert row["n_images"] == 2 and row["targets"] == ["teddy bear"]
        assert row["metrics"]["vqa"]["n"] == 2

    # the learned rows reach the picture: learned and initial rows give different images from the SAME prompt
    # and seed (if generation ignored the learned rows, both would be drawn from the initial rows)
    folder = out / "images" / melted["name"]
    learned = {r.seed: r for r in read_manifest(folder / melted["method"] / "images.jsonl")}
    start = {r.seed: r for r in read_manifest(folder / "init" / "images.jsonl")}
    assert sorted(learned) == sorted(start) == [0, 1]
    for seed in learned:
        assert learned[seed].prompt == start[seed].prompt == "a photo of a teddy bear {melted}"
        a = np.asarray(Image.open(learned[seed].path), dtype=np.int16)
        b = np.asarray(Image.open(start[seed].path), dtype=np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() > 0, seed
