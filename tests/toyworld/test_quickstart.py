"""The quick start on the bundled toy model (real code path, fewer steps), and what an inversion may touch."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_short_inversion_changes_only_the_new_rows(tmp_path):
    from lego_inversion.backbones import load_backbone
    from lego_inversion.config import InversionConfig
    from lego_inversion.trainer import invert

    backbone = load_backbone(None)
    slot = backbone.slots[0]
    base_before = slot.base_table.detach().clone()
    unet_before = {k: v.clone() for k, v in backbone.unet.state_dict().items()}
    out = invert(EXAMPLES / "melted_cube", tmp_path / "run",
                 InversionConfig(steps=3, validation_images=1, validation_steps=2, learning_rate=5e-2),
                 backbone=backbone, progress=False)
    assert torch.equal(slot.base_table, base_before)  # the vocabulary is untouched
    assert all(torch.equal(v, unet_before[k]) for k, v in backbone.unet.state_dict().items())
    ids = [i for ids in backbone.token_ids(["<subj>", "<melted>"]) for i in ids]
    assert min(ids) >= base_before.shape[0]  # new tokens are new rows
    learned = slot.ext.rows(ids).detach()
    init = torch.stack([slot.init_vector("cube"), slot.init_vector("melted")])
    assert (learned - init).norm(dim=1).min() > 0  # ... and they moved
    assert (out / "learned_embeds.safetensors").is_file()


def test_quick_start_commands(tmp_path):
    from lego_inversion.cli import main

    run, gen = tmp_path / "melted", tmp_path / "gen"
    assert main(["invert", str(EXAMPLES / "melted_cube"), "--out", str(run), "--steps", "2",
                 "--validation-steps", "2", "--no-progress"]) == 0
    assert main(["generate", "--concept", str(run), "--prompt", "a photo of a ball that is {concept}",
                 "--out", str(gen), "--num-images", "2", "--steps", "3"]) == 0
    records = [json.loads(line) for line in (gen / "images.jsonl").read_text().splitlines()]
    assert len(records) == 2 and "<melted>" in records[0]["expanded_prompt"]
    assert Image.open(gen / "0000.png").size == (64, 64)
    assert (gen / "grid.png").is_file()
