"""Tiny random diffusers models built from configs, for tests and benchmarks (no network, seconds on a CPU).

    from lego_inversion.testing import build_clip_tokenizer, build_tiny_sd
    path = build_tiny_sd(tmp_path / "tiny-sd")          # a StableDiffusionPipeline folder, 16 px images
    tok = build_clip_tokenizer(tmp_path / "tokenizer")  # the real CLIP BPE vocabulary (from open_clip_torch)

The CLIP tokenizer is the real one: vocab.json and merges.txt are rebuilt from the BPE merges list that the
open_clip_torch wheel ships (`bpe_simple_vocab_16e6.txt.gz`), in the same order OpenAI's tokenizer builds them,
so ids match the hub's `openai/clip-vit-large-patch14` tokenizer (49408 entries).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import torch

CLIP_VOCAB_SIZE = 49408


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")  # located, not imported (open_clip imports torchvision)
    if spec is None or spec.origin is None:
        raise RuntimeError("open_clip_torch is not installed; run scripts/setup.sh (it installs it with --no-deps)")
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


def build_clip_tokenizer(folder: str | Path, model_max_length: int = 77):
    """Write vocab.json + merges.txt for the real CLIP tokenizer into `folder` and load it."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                              model_max_length=model_max_length)
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_clip_text_encoder(hidden: int = 32, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, projection_dim=hidden))


def tiny_unet(cross_attention_dim: int = 32, sample_size: int = 8, seed: int = 0, **overrides):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    config = dict(sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
                  block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_attention_dim,
                  attention_head_dim=8, norm_num_groups=16)
    config.update(overrides)
    return UNet2DConditionModel(**config)


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32), latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=8, sample_size=16)


def build_tiny_sd(folder: str | Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """A random StableDiffusionPipeline (16 px images, 8×8×4 latents) saved with safetensors to `folder`."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = Path(folder)
    tokenizer = build_clip_tokenizer(folder / "_tokenizer_src")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(vae=tiny_vae(seed), text_encoder=tiny_clip_text_encoder(seed=seed),
                                   tokenizer=tokenizer, unet=tiny_unet(seed=seed), scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
