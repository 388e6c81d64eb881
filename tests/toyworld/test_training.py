"""Toy-model training at a tiny size: every phase runs, the export loads, a rerun resumes; schedule helpers."""

from __future__ import annotations

import dataclasses
import io
import json
import time

import numpy as np
import pytest
import torch

from lego_inversion.toyworld import MODEL_PARTS, model_path
from lego_inversion.toyworld.train_configs import TrainConfig
from lego_inversion.toyworld.training import UNET_STATE, VAE_LR_FLOOR, VAE_STATE, _random_crop, _vae_lr, train


def _tiny(out) -> TrainConfig:
    return TrainConfig(out=str(out), n_images=8, vae_steps=2, vae_batch=2, unet_steps=2, unet_batch=2, warmup=1,
                       checkpoint_every=1)


def test_tiny_run_exports_a_complete_pipeline_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("LEGO_CACHE", str(tmp_path / "cache"))
    cfg = _tiny(tmp_path / "run")
    log = io.StringIO()
    export = train(cfg, log=log)
    assert export == tmp_path / "run" / "model"
    assert all((export / part).exists() for part in MODEL_PARTS)
    record = json.loads((export / "training.json").read_text())
    assert record["config"] == dataclasses.asdict(cfg) and record["unet_steps_done"] == 2
    assert record["threads"] == torch.get_num_threads()
    assert "vae step 1" in log.getvalue() and "unique captions encoded" in log.getvalue()
    scaling = json.loads((export / "vqvae" / "config.json").read_text())["scaling_factor"]
    assert scaling != 1.0 and np.isfinite(scaling)  # set from the data, not the diffusers default

    log = io.StringIO()
    train(dataclasses.replace(cfg, unet_steps=3), log=log)  # a longer rerun continues from the checkpoints
    assert json.loads((export / "training.json").read_text())["unet_steps_done"] == 3
    assert "vae step" not in log.getvalue()  # the VAE phase was already complete
    assert torch.load(tmp_path / "run" / UNET_STATE, weights_only=True)["step"] == 3
    assert torch.load(tmp_path / "run" / VAE_STATE, weights_only=True)["step"] == 2
    assert (model_path(export) / "bert" / "config.json").is_file()


def test_fine_tune_starts_from_an_exported_model_folder(tmp_path, monkeypatch):
    """init_from an exported folder (the bundled model's form): its VAE is taken as a finished VAE phase (no VAE
    step runs) and the UNet starts from its weights; a folder without unet/ is a one-line error."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from lego_inversion.errors import UserError

    monkeypatch.setenv("LEGO_CACHE", str(tmp_path / "cache"))
    export = train(_tiny(tmp_path / "first"), log=io.StringIO())
    cfg = dataclasses.replace(_tiny(tmp_path / "second"), init_from=str(export), unet_steps=1, unet_lr=1e-12)
    log = io.StringIO()
    train(cfg, log=log)
    assert "vae step" not in log.getvalue()
    vae_state = torch.load(tmp_path / "second" / VAE_STATE, weights_only=True)
    assert vae_state["step"] == cfg.vae_steps
    exported_vae = AutoencoderKL.from_pretrained(export / "vqvae").float().state_dict()
    assert all(torch.equal(vae_state["model"][k], v) for k, v in exported_vae.items())
    exported_unet = UNet2DConditionModel.from_pretrained(export / "unet").float().state_dict()
    tuned = torch.load(tmp_path / "second" / UNET_STATE, weights_only=True)["model"]
    # one step at a negligible learning rate: the UNet is where the export left it, not a fresh init
    assert all(torch.allclose(tuned[k], v, atol=1e-6) for k, v in exported_unet.items())
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "model_index.json").write_text("{}")
    with pytest.raises(UserError, match="vqvae not found"):
        TrainConfig(init_from=str(tmp_path / "bare"))


def test_vae_learning_rate_decays_along_a_cosine_to_its_floor():
    cfg = TrainConfig(vae_lr=2e-3, vae_steps=100)
    assert _vae_lr(cfg, 0) == pytest.approx(2e-3)
    assert _vae_lr(cfg, 50) == pytest.approx(2e-3 * (1 + VAE_LR_FLOOR) / 2)
    assert _vae_lr(cfg, 100) == pytest.approx(2e-3 * VAE_LR_FLOOR)


def test_random_crops_stay_on_the_latent_grid():
    x = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).view(2, 3, 64, 64)
    g = torch.Generator().manual_seed(0)
    assert _random_crop(x, 64, g) is x
    for _ in range(20):
        crop = _random_crop(x, 32, g)
        assert crop.shape == (2, 3, 32, 32)
        top_left = int(crop[0, 0, 0, 0])
        assert (top_left // 64) % 8 == 0 and (top_left % 64) % 8 == 0


def test_unet_phase_draws_timesteps_from_the_scheduler_config(tmp_path, monkeypatch):
    """With a 10-step schedule every drawn timestep must index its 10 alphas (a hard-coded 1000 would not)."""
    from diffusers import DDPMScheduler

    from lego_inversion.toyworld import training
    from lego_inversion.toyworld.model import NOISE_SCHEDULE

    monkeypatch.setattr(training, "build_scheduler", lambda kind: DDPMScheduler(**(NOISE_SCHEDULE | {
        "num_train_timesteps": 10})))
    seen = []
    real_randint = torch.randint

    def spy(low, high, *args, **kwargs):
        seen.append(high)
        return real_randint(low, high, *args, **kwargs)

    monkeypatch.setattr(training.torch, "randint", spy)
    data = training.TrainingSet(torch.randn(4, 16, 8, 8), torch.zeros(4, 16, 8, 8), 1.0, torch.randn(3, 77, 384),
                                torch.tensor([0, 1, 0, 1]))
    cfg = dataclasses.replace(_tiny(tmp_path), unet_steps=3, time_budget_min=60.0)
    _, steps, losses = training.train_unet(cfg, data, tmp_path, t0=time.time(), log=io.StringIO())
    assert steps == 3 and len(losses) == 3 and all(np.isfinite(losses))
    assert seen.count(10) == 3 and 1000 not in seen
