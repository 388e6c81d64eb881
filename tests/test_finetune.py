"""Fine-tuning baselines' UNet parts: trainable, base untouched, and loadable by diffusers' own loaders."""

import pytest
import torch
from diffusers import DiffusionPipeline

from concept_fixtures import snapshot
from lego_inversion.backbones import load_backbone
from lego_inversion.errors import UserError
from lego_inversion.finetune import (CUSTOM_DIFFUSION_FILE, LORA_FILE, add_custom_diffusion, add_lora,
                                     apply_unet_parts, remove_unet_parts, save_unet_parts)


def _unet_out(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(1, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    cond = torch.randn(1, 5, cfg.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([500]), encoder_hidden_states=cond).sample


def _train_a_little(params, unet):
    opt = torch.optim.SGD(params, lr=0.5)
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        cfg = unet.config
        x = torch.randn(1, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
        cond = torch.randn(1, 5, cfg.cross_attention_dim, generator=g)
        unet(x, torch.tensor([500]), encoder_hidden_states=cond).sample.square().mean().backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("method", ["dreambooth", "custom-diffusion"])
def test_parts_train_save_and_load_through_diffusers(tiny_sd, tmp_path, method):
    backbone = load_backbone(str(tiny_sd))
    frozen = snapshot(backbone)
    base = _unet_out(backbone.unet)
    params = add_lora(backbone.unet, rank=2, alpha=4.0) if method == "dreambooth" \
        else add_custom_diffusion(backbone.unet)
    assert params and all(p.requires_grad and p.dtype == torch.float32 for p in params)
    if method == "custom-diffusion":
        assert len(params) == 2 * 4  # W_k and W_v of each of the tiny UNet's 4 cross-attention layers
        assert torch.allclose(_unet_out(backbone.unet), base, atol=1e-6)  # initialised from the base weights
    _train_a_little(params, backbone.unet)
    tuned = _unet_out(backbone.unet)
    assert not torch.allclose(tuned, base, atol=1e-4)
    written = save_unet_parts(tmp_path, backbone, method)
    assert written.name == (LORA_FILE if method == "dreambooth" else CUSTOM_DIFFUSION_FILE)
    after = snapshot(backbone)
    for key in frozen:  # base weights never change (LoRA/processor weights live in their own modules)
        assert key not in after or torch.equal(frozen[key], after[key]), key

    pipe = DiffusionPipeline.from_pretrained(str(tiny_sd))  # the other tool's real loader
    if method == "dreambooth":
        pipe.load_lora_weights(str(tmp_path), weight_name=LORA_FILE)
    else:
        pipe.unet.load_attn_procs(str(tmp_path), weight_name=CUSTOM_DIFFUSION_FILE, _pipeline=pipe)
    torch.testing.assert_close(_unet_out(pipe.unet), tuned, rtol=1e-4, atol=1e-5)

    fresh = load_backbone(str(tiny_sd))  # our generation path: apply, then remove
    assert apply_unet_parts(fresh, tmp_path) == method
    torch.testing.assert_close(_unet_out(fresh.unet), tuned, rtol=1e-4, atol=1e-5)
    remove_unet_parts(fresh)
    torch.testing.assert_close(_unet_out(fresh.unet), base, rtol=0, atol=0)


def test_lora_on_the_toy_model_loads_without_a_lora_pipeline(tmp_path):
    """LDMTextToImagePipeline has no load_lora_weights; the UNet's own loader takes the same file."""
    backbone = load_backbone(None)
    params = add_lora(backbone.unet, rank=2)
    _train_a_little(params, backbone.unet)
    tuned = _unet_out(backbone.unet)
    save_unet_parts(tmp_path, backbone, "dreambooth")
    fresh = load_backbone(None)
    assert apply_unet_parts(fresh, tmp_path) == "dreambooth"
    torch.testing.assert_close(_unet_out(fresh.unet), tuned, rtol=1e-4, atol=1e-5)


def test_bad_lora_settings_are_one_line_errors(tiny_sd):
    backbone = load_backbone(str(tiny_sd))
    with pytest.raises(UserError, match="lora_rank must be at least 1"):
        add_lora(backbone.unet, rank=0)
    with pytest.raises(UserError, match="no module named 'to_qq'"):
        add_lora(backbone.unet, rank=2, target_modules=("to_qq",))


def test_kohya_export_loads_through_diffusers_with_the_same_scale(tiny_sd, tmp_path):
    """Automatic1111 / ComfyUI / kohya read the kohya-ss layout (lora_down / lora_up / alpha); diffusers' own
    converter reads it too, so a round trip through it checks names and the alpha / rank scale."""
    from safetensors.torch import save_file

    from lego_inversion.finetune import lora_to_kohya

    backbone = load_backbone(str(tiny_sd))
    _train_a_little(add_lora(backbone.unet, rank=2, alpha=4.0), backbone.unet)
    tuned = _unet_out(backbone.unet)
    save_unet_parts(tmp_path, backbone, "dreambooth")
    kohya = lora_to_kohya(tmp_path)
    assert all(k.startswith("lora_unet_") for k in kohya)
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {4.0}
    save_file(kohya, str(tmp_path / "melted_lora.safetensors"))
    pipe = DiffusionPipeline.from_pretrained(str(tiny_sd))
    pipe.load_lora_weights(str(tmp_path), weight_name="melted_lora.safetensors")
    torch.testing.assert_close(_unet_out(pipe.unet), tuned, rtol=1e-4, atol=1e-5)
