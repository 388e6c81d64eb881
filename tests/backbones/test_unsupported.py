"""Pipelines the adapter does not know are refused with one clear line naming the supported ones."""

from __future__ import annotations

import pytest

from lego_inversion.backbones import ADAPTERS, from_pipeline, load_backbone
from lego_inversion.errors import UserError

SUPPORTED = ["LDMTextToImagePipeline", "StableDiffusionPipeline", "StableDiffusionXLPipeline"]


def test_unsupported_pipeline_is_refused(tmp_path):
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=4)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    assert sorted(ADAPTERS) == SUPPORTED
    with pytest.raises(UserError) as info:
        from_pipeline(pipe)
    message = str(info.value)
    assert "DDPMPipeline is not supported" in message and "\n" not in message
    assert all(name in message for name in SUPPORTED)
    pipe.save_pretrained(tmp_path / "ddpm", safe_serialization=True)
    with pytest.raises(UserError, match="DDPMPipeline is not supported; supported: LDMTextToImagePipeline, "
                                        "StableDiffusionPipeline, StableDiffusionXLPipeline"):
        load_backbone(str(tmp_path / "ddpm"), device="cpu")
