"""The diffusion loss follows the scheduler's prediction type (SD 2.x v-prediction), checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from backbone_helpers import FAST, make_concept

import lego_inversion.trainer as trainer_module
from lego_inversion.backbones import load_backbone
from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.trainer import InversionRun


def hand_alphas_cumprod() -> np.ndarray:
    """ᾱ_t of the tiny models' schedule: scaled_linear betas from 0.00085 to 0.012 over 1000 steps."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon", "sample"])
def test_training_target_matches_hand_computation(tmp_path, monkeypatch, prediction_type):
    from lego_inversion.testing import build_tiny_sd

    model = build_tiny_sd(tmp_path / "model", prediction_type=prediction_type)
    backbone = load_backbone(str(model))
    assert backbone.noise_scheduler.config.prediction_type == prediction_type
    run = InversionRun(load_concept(make_concept(tmp_path / "melted")), backbone, InversionConfig(**FAST),
                       tmp_path / "out")
    seen = {}
    original_target, original_predict = trainer_module.diffusion_target, backbone.predict

    def spy_target(scheduler, latents, noise, timesteps):
        seen.update(latents=latents, noise=noise, timesteps=timesteps)
        seen["target"] = original_target(scheduler, latents, noise, timesteps)
        return seen["target"]

    def spy_predict(noisy, timesteps, cond, geometry=None):
        seen["noisy"] = noisy
        seen["prediction"] = original_predict(noisy, timesteps, cond, geometry)
        return seen["prediction"]

    monkeypatch.setattr(trainer_module, "diffusion_target", spy_target)
    monkeypatch.setattr(backbone, "predict", spy_predict)
    terms = run.losses()

    x0, eps = seen["latents"].double(), seen["noise"].double()
    abar = torch.from_numpy(hand_alphas_cumprod()[seen["timesteps"].cpu().numpy()])[:, None, None, None]
    a, s = abar.sqrt(), (1 - abar).sqrt()
    torch.testing.assert_close(seen["noisy"].double(), a * x0 + s * eps, rtol=1e-5, atol=1e-5)
    expected = {"v_prediction": a * eps - s * x0, "epsilon": eps, "sample": x0}[prediction_type]
    torch.testing.assert_close(seen["target"].double(), expected, rtol=1e-5, atol=1e-5)
    if prediction_type == "v_prediction":  # v differs from both ε and x0 here, so the check can fail
        assert not torch.allclose(expected, eps, atol=1e-3) and not torch.allclose(expected, x0, atol=1e-3)
    per_sample = (seen["prediction"].detach().double() - expected).pow(2).flatten(1).mean(1)
    n = per_sample.shape[0] // 2  # subject batch first, then concept batch
    assert float(terms["loss_subject"].detach()) == pytest.approx(float(per_sample[:n].mean()), rel=1e-5)
    assert float(terms["loss_concept"].detach()) == pytest.approx(float(per_sample[n:].mean()), rel=1e-5)
    images = backbone.sample(["a photo of a <subj> that is <melted>"], torch.randn(1, 4, 8, 8),
                             num_inference_steps=2)
    assert images[0].size == (16, 16)
