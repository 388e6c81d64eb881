"""`rewind`: an offer that trails the best look by at least d sends training back to the kept rows, with fresh
Adam moments; the draws go on, and a resumed run rewinds as an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lego_inversion import judges
from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.selection import LookSelector
from lego_inversion.trainer import InversionRun, invert, load_training_backbone
from test_selection import _checkpoint, interrupted_and_resumed

LOOK = dict(steps=6, checkpoint_every=2, validation_steps=1, validation_images=1, select_every=2, select_by="look",
            select_subjects="sphere", select_images=1, learning_rate=1e-2)


@pytest.fixture
def scripted(monkeypatch):
    """Look scores read from a table by the run's step (exact binary fractions, so `trails by` is exact)."""
    table = {}
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: None)
    monkeypatch.setattr(LookSelector, "score", lambda self, run: table[run.step])
    return table


def _walk(monkeypatch) -> dict[int, torch.Tensor]:
    """Record the rows each step starts from (taken when the step draws its batch)."""
    seen, original = {}, InversionRun.draw

    def draw(self):
        seen[self.step] = self.params["rows/text_encoder"].detach().clone()
        return original(self)

    monkeypatch.setattr(InversionRun, "draw", draw)
    return seen


def _twin(tiny_sd, concept_dir, tmp_path) -> list[torch.Tensor]:
    """The rows after steps 0 … 6 of the same run without selection: the walk no score can change."""
    config = InversionConfig(**(LOOK | {"select_every": 0}))
    run = InversionRun(load_concept(concept_dir), load_training_backbone(str(tiny_sd), config), config,
                       tmp_path / "twin")
    rows = [run.params["rows/text_encoder"].detach().clone()]
    for _ in range(config.steps):
        run.train_step()
        rows.append(run.params["rows/text_encoder"].detach().clone())
    return rows


def _rewinds(out) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("select/rewind")} if "select/rewind" in events.Tags()["scalars"] \
        else {}


def test_an_offer_trailing_by_d_goes_back_to_the_kept_rows_and_takes_a_fresh_adam_step(
        tiny_sd, concept_dir, tmp_path, monkeypatch, scripted):
    twin = _twin(tiny_sd, concept_dir, tmp_path)
    scripted |= {0: 0.5, 2: 0.75, 4: 0.5, 6: 0.875}  # step 4 trails step 2 by exactly d
    seen = _walk(monkeypatch)
    out = invert(concept_dir, tmp_path / "rw", InversionConfig(**LOOK, rewind=0.25), model=str(tiny_sd),
                 progress=False)
    for step in range(4):  # up to the rewind, the twin's walk
        assert torch.equal(seen[step], twin[step])
    assert torch.equal(seen[4], twin[2])  # step 5 starts from the rows kept at step 2, not the twin's step 4
    assert _rewinds(out) == {4: 2.0}
    # Adam's first step from fresh moments, by hand: m̂ = g, v̂ = g², so every coordinate moves by lr·g/(|g|+ε) ≈ lr
    moved = (seen[5] - seen[4]).abs()
    torch.testing.assert_close(moved, torch.full_like(moved, LOOK["learning_rate"]), rtol=1e-4, atol=0)
    carried_on = (twin[4] - twin[3]).abs()  # the twin's step 4 carries its moments: the moves differ from lr
    assert not torch.allclose(carried_on, torch.full_like(carried_on, LOOK["learning_rate"]), rtol=1e-2, atol=0)
    # the walk after the rewind is new (the draws go on), and the results hold its step-6 rows, the best scored
    tensors, _ = _checkpoint(out)
    assert not torch.equal(tensors["rows/text_encoder"], twin[6])
    saved = load_file(out / "learned_embeds.safetensors")
    assert torch.equal(torch.stack([saved["<subj>"], saved["<melted>"]]), tensors["rows/text_encoder"])
    assert json.loads((out / "selection.json").read_text())["step"] == 6


def test_an_offer_trailing_by_less_than_d_leaves_the_walk_alone(tiny_sd, concept_dir, tmp_path, scripted):
    twin = _twin(tiny_sd, concept_dir, tmp_path)
    scripted |= {0: 0.5, 2: 0.75, 4: 0.625, 6: 0.5}  # trails by 0.125 < d, and the last offer never rewinds
    out = invert(concept_dir, tmp_path / "rw", InversionConfig(**LOOK, rewind=0.25), model=str(tiny_sd),
                 progress=False)
    assert torch.equal(_checkpoint(out)[0]["rows/text_encoder"], twin[6]) and _rewinds(out) == {}
    saved = load_file(out / "learned_embeds.safetensors")
    assert torch.equal(torch.stack([saved["<subj>"], saved["<melted>"]]), twin[2])


def test_resumed_run_rewinds_as_an_uninterrupted_one(tiny_sd, concept_dir, tmp_path, monkeypatch, scripted):
    scripted |= {0: 0.5, 2: 0.75, 4: 0.5, 6: 0.625}
    config = InversionConfig(**LOOK, rewind=0.25)
    full = invert(concept_dir, tmp_path / "full", config, model=str(tiny_sd), progress=False)
    resumed = interrupted_and_resumed(concept_dir, tmp_path / "part", config, str(tiny_sd), monkeypatch, at_step=5)
    a, b = _checkpoint(full)[0], _checkpoint(resumed)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _rewinds(full) == _rewinds(resumed) == {4: 2.0}


@pytest.mark.parametrize("settings, message", [
    ({"rewind": -0.1}, "rewind must be >= 0"),
    ({"rewind": 0.2, "ema_decay": 0.9}, "with ema_decay"),
    ({"rewind": 0.2, "method": "dreambooth"}, "dreambooth fine-tunes the UNet"),
])
def test_config_rejects_bad_rewind(settings, message):
    with pytest.raises(UserError, match=message):
        InversionConfig(**settings)


def test_rewind_without_selection_is_one_line_before_anything_is_written(tiny_sd, concept_dir, tmp_path, capsys):
    from lego_inversion.cli import main

    out = tmp_path / "out"
    assert main(["invert", str(concept_dir), "--out", str(out), "--model", str(tiny_sd), "--rewind", "0.2"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the model's loading bars
    assert last.startswith("lego: error:") and "this run selects none" in last and not out.exists()
