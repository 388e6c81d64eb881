"""`select_every`: the run keeps the rows that score best on fixed draws of its exemplars (selection.py), without
changing what training does, and a resumed run selects as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lego_inversion.backbones import load_backbone
from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.losses import diffusion_loss, diffusion_target
from lego_inversion.trainer import InversionRun, invert

FAST = dict(steps=6, checkpoint_every=2, validation_steps=1, validation_images=1)


def _checkpoint(folder):
    with safe_open(str(folder / "checkpoint.safetensors"), "pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, json.loads(fh.metadata()["lego_checkpoint"])


def test_config_rejects_bad_selection_values():
    for bad in ({"select_every": -1}, {"select_draws": 0}):
        with pytest.raises(UserError, match="select"):
            InversionConfig(**bad)


def test_selection_keeps_the_best_scored_rows_and_leaves_training_alone(tiny_sd, concept_dir, tmp_path):
    plain = invert(concept_dir, tmp_path / "plain", InversionConfig(**FAST), model=str(tiny_sd), progress=False)
    picked = invert(concept_dir, tmp_path / "picked", InversionConfig(select_every=2, select_draws=2, **FAST),
                    model=str(tiny_sd), progress=False)
    tensors, _ = _checkpoint(picked)
    # training is untouched: the last rows equal those of the run without selection
    last = load_file(plain / "learned_embeds.safetensors")
    assert torch.equal(tensors["rows/text_encoder"], torch.stack([last["<subj>"], last["<melted>"]]))
    # the results hold the kept rows, scored at one of the candidate steps (the initializer included)
    saved = load_file(picked / "learned_embeds.safetensors")
    assert torch.equal(torch.stack([saved["<subj>"], saved["<melted>"]]), tensors["select/rows/text_encoder"])
    assert int(tensors["select/step"]) in (0, 2, 4, 6)
    # TensorBoard holds each offer's score, the initializer's at step 0 too; the kept one is the best of them
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(picked / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("select/score")}
    assert sorted(logged) == [0, 2, 4, 6]
    best = float(tensors["select/score"])
    assert best == pytest.approx(min(logged.values())) and logged[int(tensors["select/step"])] == pytest.approx(best)


def test_score_is_the_mean_denoising_loss_of_the_fixed_draws(tiny_sd, concept_dir, tmp_path):
    """By hand: Eq. 1 on each fixed draw's noisy latents, concept and subject batch means, averaged over draws;
    scoring twice gives the same number and leaves the training streams where they were."""
    backbone = load_backbone(str(tiny_sd))
    run = InversionRun(load_concept(concept_dir), backbone, InversionConfig(select_every=1, select_draws=3, **FAST),
                       tmp_path / "o")
    states = {k: g.get_state() for k, g in run.generators.items()}
    sched, total = backbone.noise_scheduler, 0.0
    with torch.no_grad():
        for d in run.selector.draws:
            ids = [torch.cat([ex.ids[0][rows] for ex, rows, _ in d.groups])]
            cond = backbone.encode_text(ids)
            noisy = sched.add_noise(d.latents, d.noise, d.timesteps)
            per = diffusion_loss(backbone.predict(noisy, d.timesteps, cond, d.geometry),
                                 diffusion_target(sched, d.latents, d.noise, d.timesteps))
            total += float(per[d.n_subject:].mean() + per[:d.n_subject].mean())
    assert run.selector.score(run) == pytest.approx(total / 3, rel=1e-5)
    assert run.selector.score(run) == run.selector.score(run)
    assert all(torch.equal(states[k], g.get_state()) for k, g in run.generators.items())
    # offer keeps the lower score: worse rows are not kept, restore brings the best back
    best = run.params["rows/text_encoder"].detach().clone()
    with torch.no_grad():
        run.params["rows/text_encoder"].add_(torch.randn_like(best) * 50)
    worse = run.selector.offer(run)
    assert worse > run.selector.best_score and run.selector.best_step == 0
    run.selector.restore(run)
    assert torch.equal(run.params["rows/text_encoder"], best)


def interrupted_and_resumed(concept_dir, out, config, model, monkeypatch, at_step: int = 3):
    """Train `config` into `out`, stopped by Ctrl-C at the start of step `at_step`, then resumed to the end."""
    original = InversionRun.draw

    def interrupted(self):
        if self.step == at_step and self.selector is not None:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(InversionRun, "draw", interrupted)
    with pytest.raises(KeyboardInterrupt):
        invert(concept_dir, out, config, model=model, progress=False)
    monkeypatch.setattr(InversionRun, "draw", original)
    return invert(concept_dir, out, config, model=model, resume=True, progress=False)


def test_resumed_run_selects_as_an_uninterrupted_one(tiny_sd, concept_dir, tmp_path, monkeypatch):
    config = InversionConfig(select_every=2, select_draws=2, **FAST)
    full = invert(concept_dir, tmp_path / "full", config, model=str(tiny_sd), progress=False)
    resumed = interrupted_and_resumed(concept_dir, tmp_path / "part", config, str(tiny_sd), monkeypatch)
    a, b = load_file(full / "learned_embeds.safetensors"), load_file(resumed / "learned_embeds.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _checkpoint(full)[0]["select/step"] == _checkpoint(resumed)[0]["select/step"]


def test_fine_tuning_methods_do_not_select(tiny_sd, concept_dir, tmp_path):
    run = InversionRun(load_concept(concept_dir), load_backbone(str(tiny_sd)),
                       InversionConfig(method="dreambooth", select_every=2, **FAST), tmp_path / "o")
    assert run.selector is None
