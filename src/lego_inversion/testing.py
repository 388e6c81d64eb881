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


def build_tiny_sdxl(folder: str | Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """A random StableDiffusionXLPipeline (16 px images) saved with safetensors to `folder`.

    Two CLIP tokenizers with the real vocabulary (tokenizer_2 pads with "!", as SDXL's does) and two text
    encoders of different widths (32 = "clip_l", 64 = "clip_g" with a 32-d projection), both with the legacy
    `eos_token_id = 2` of the released SDXL configs, so the pooled-EOS fix of the adapter is exercised.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    src = folder / "_tokenizer_src"
    tokenizer = build_clip_tokenizer(src)
    tokenizer_2 = CLIPTokenizer(str(src / "vocab.json"), str(src / "merges.txt"), pad_token="!",
                                model_max_length=77)

    def text_config(hidden: int, projection: int) -> CLIPTextConfig:
        return CLIPTextConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=3,
                              num_attention_heads=4, vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=77,
                              bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=projection,
                              hidden_act="gelu")

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(text_config(32, 32))
    text_encoder_2 = CLIPTextModelWithProjection(text_config(64, 32))
    time_dim = 8
    unet = tiny_unet(cross_attention_dim=32 + 64, seed=seed, addition_embed_type="text_time",
                     addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=6 * time_dim + 32,
                     use_linear_projection=True)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading", prediction_type=prediction_type)
    pipe = StableDiffusionXLPipeline(vae=tiny_vae(seed), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# Enough word pieces for any lower-case ASCII word: every letter, as a word start and as a "##" continuation.
_BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_BERT_WORDS = ("a an the of photo that is cube teddy bear sphere melted molten drip ##ping solid intact frozen "
               "ice fire painting on in and with").split()


def build_bert_tokenizer(folder: str | Path):
    """A small lower-casing BertTokenizer (vocab.txt written to `folder`) that can spell any ASCII word."""
    import string

    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits) + list(string.punctuation)
    vocab = _BERT_SPECIAL + list(dict.fromkeys(chars + [f"##{c}" for c in string.ascii_lowercase + string.digits]
                                               + _BERT_WORDS))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True, model_max_length=77)


def build_tiny_ldm(folder: str | Path, seed: int = 0, autoencoder: str = "vq") -> Path:
    """A random LDMTextToImagePipeline like CompVis ldm-text2im-large-256 in miniature, saved to `folder`.

    LDMBert text encoder (32-d, 2 layers) + BertTokenizer, a 2× `VQModel` ("vq") or `AutoencoderKL` ("kl"),
    8×8×4 latents (16 px images), DDIM scheduler.
    """
    from diffusers import DDIMScheduler, LDMTextToImagePipeline, VQModel
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

    folder = Path(folder)
    tokenizer = build_bert_tokenizer(folder / "_tokenizer_src")
    torch.manual_seed(seed)
    bert = LDMBertModel(LDMBertConfig(vocab_size=len(tokenizer), max_position_embeddings=77, encoder_layers=2,
                                      encoder_ffn_dim=64, encoder_attention_heads=4, head_dim=8, d_model=32))
    torch.manual_seed(seed)
    if autoencoder == "vq":
        vae = VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), layers_per_block=1,
                      latent_channels=4, num_vq_embeddings=64, norm_num_groups=8, sample_size=16)
    else:
        vae = tiny_vae(seed)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    pipe = LDMTextToImagePipeline(vqvae=vae, bert=bert, tokenizer=tokenizer, unet=tiny_unet(seed=seed),
                                  scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# Published architectures (the hub configs of runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-xl-
# base-1.0), so that real-size speed and memory can be measured where no weights can be downloaded.
_VAE_FULL = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
_CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               projection_dim=768, hidden_act="quick_gelu")
_CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                   projection_dim=1280, hidden_act="gelu")
_SCALED_LINEAR = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


def full_size_components(family: str) -> dict:
    """Randomly initialised real-size components of `family` ("sd15" or "sdxl"), without tokenizers.

    Build them under `with torch.device("meta"):` to count parameters for free (tests/test_testing.py checks
    the published totals: SD 1.5 UNet 859.5 M, SDXL UNet 2567.5 M).
    """
    if family not in ("sd15", "sdxl"):
        raise ValueError(f"family must be 'sd15' or 'sdxl', not {family!r}")
    from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def text(arch: dict) -> CLIPTextConfig:  # the released configs' legacy special-token ids
        return CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
                              pad_token_id=1, **arch)

    with torch.device("cpu"):  # schedulers keep real (CPU) tensors, also when the models are built on "meta"
        scheduler = (DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **_SCALED_LINEAR) if family == "sd15"
                     else EulerDiscreteScheduler(timestep_spacing="leading", **_SCALED_LINEAR))
    if family == "sd15":
        return dict(vae=AutoencoderKL(sample_size=512, **_VAE_FULL), text_encoder=CLIPTextModel(text(_CLIP_L)),
                    unet=UNet2DConditionModel(sample_size=64, cross_attention_dim=768), scheduler=scheduler)
    if family == "sdxl":
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
        return dict(vae=AutoencoderKL(sample_size=1024, scaling_factor=0.13025, force_upcast=True, **_VAE_FULL),
                    text_encoder=CLIPTextModel(text(_CLIP_L)),
                    text_encoder_2=CLIPTextModelWithProjection(text(_CLIP_BIG_G)), unet=unet, scheduler=scheduler)


def build_full_size(folder: str | Path, family: str, seed: int = 0) -> Path:
    """A real-size, randomly initialised SD 1.5 or SDXL pipeline saved to `folder` (fp32 safetensors).

    Only for speed and memory measurements (benchmarks/trainer_speed.py --model sd15-random|sdxl-random):
    the weights are noise, so the images are too.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    folder = Path(folder)
    tokenizer = build_clip_tokenizer(folder / "_tokenizer_src")
    torch.manual_seed(seed)
    parts = full_size_components(family)
    if family == "sd15":
        pipe = StableDiffusionPipeline(tokenizer=tokenizer, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False, **parts)
    else:
        src = folder / "_tokenizer_src"
        tokenizer_2 = CLIPTokenizer(str(src / "vocab.json"), str(src / "merges.txt"), pad_token="!",
                                    model_max_length=77)
        pipe = StableDiffusionXLPipeline(tokenizer=tokenizer, tokenizer_2=tokenizer_2, add_watermarker=False,
                                         force_zeros_for_empty_prompt=True, **parts)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
