"""Optimisation speed of `lego invert` against a straightforward Textual Inversion loop, same model and batch.

    python benchmarks/trainer_speed.py                       # a 64 px random SD model built on the fly (CPU)
    python benchmarks/trainer_speed.py --model toy           # the embedded toy-world model
    python benchmarks/trainer_speed.py --model runwayml/stable-diffusion-v1-5 --device cuda --batch 2

The baseline is the textbook TI recipe (as in the diffusers example script): VAE-encode the images every step,
resize the embedding table, let AdamW hold the *whole* table, and copy the original rows back after each step.
The Lego trainer encodes each image once (both flips), trains only the new rows, and shares one UNet call
between the subject and concept batches. Both see the same number of samples per UNet call (2 × --batch).
Each side runs in its own subprocess so that peak memory is measured separately; the ratio is what to quote.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def build_model(folder: Path) -> str:
    """A random SD pipeline big enough that the VAE and embedding table cost what they cost (64 px, 768-d CLIP)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

    from lego_inversion.testing import build_clip_tokenizer, tiny_clip_text_encoder, tiny_unet

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 64, 64, 64), latent_channels=4, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=16, sample_size=64)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=tiny_clip_text_encoder(hidden=768), tokenizer=build_clip_tokenizer(folder / "tok"),
        unet=tiny_unet(cross_attention_dim=768, sample_size=8), scheduler=DDIMScheduler(steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return str(folder)


def lego_side(model: str, concept: Path, steps: int, batch: int, device: str) -> dict:
    from lego_inversion.backbones import load_backbone
    from lego_inversion.concept import load_concept
    from lego_inversion.config import InversionConfig
    from lego_inversion.trainer import InversionRun

    backbone = load_backbone(model, device=device)
    run = InversionRun(load_concept(concept), backbone, InversionConfig(batch_size=batch, steps=steps + 2),
                       Path(tempfile.mkdtemp()))
    run.train_step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        run.train_step()
    return {"seconds": time.perf_counter() - start, "samples_per_step": 2 * batch}


def baseline_side(model: str, concept: Path, steps: int, batch: int, device: str) -> dict:
    from diffusers import DDPMScheduler, DiffusionPipeline

    from lego_inversion.concept import load_concept
    from lego_inversion.images import load_image, to_tensor

    spec = load_concept(concept)
    pipe = DiffusionPipeline.from_pretrained(model).to(device)
    tok, unet = pipe.tokenizer, pipe.unet
    ldm = hasattr(pipe, "bert")  # LDMTextToImagePipeline (toy model, LDM-256): BERT text side, 77 tokens
    enc, vae = (pipe.bert, pipe.vqvae) if ldm else (pipe.text_encoder, pipe.vae)
    max_length = 77 if ldm else tok.model_max_length
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    tokens = [spec.subject_token] + spec.tokens
    tok.add_tokens(tokens)
    enc.resize_token_embeddings(len(tok))
    ids_new = tok.convert_tokens_to_ids(tokens)
    table = enc.get_input_embeddings().weight
    with torch.no_grad():
        for i in ids_new:
            table[i] = table[tok.convert_tokens_to_ids("cube")]
    orig = table.detach().clone()
    keep = torch.ones(len(tok), dtype=torch.bool)
    keep[ids_new] = False
    for m in (vae, unet, enc):
        m.requires_grad_(False)
    enc.get_input_embeddings().requires_grad_(True)
    opt = torch.optim.AdamW(enc.get_input_embeddings().parameters(), lr=5e-3, weight_decay=0.0)
    size = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    images = spec.with_images + spec.without_images
    pixels = torch.stack([to_tensor(load_image(p, size=size)) for p in images]).to(device)
    prompt = spec.prompts["with"].format(subject=spec.subject_token, concept=" ".join(spec.tokens))
    ids = tok([prompt] * (2 * batch), padding="max_length", max_length=max_length, truncation=True,
              return_tensors="pt").input_ids.to(device)

    def step():
        idx = torch.randint(len(images), (2 * batch,))
        latents = vae.encode(pixels[idx]).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(sched.config.num_train_timesteps, (latents.shape[0],), device=device)
        pred = unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=enc(ids)[0]).sample
        torch.nn.functional.mse_loss(pred.float(), noise.float()).backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            enc.get_input_embeddings().weight[keep] = orig[keep]

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return {"seconds": time.perf_counter() - start, "samples_per_step": 2 * batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", choices=("lego", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--concept", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        side = lego_side if args.only == "lego" else baseline_side
        result = side(args.model, args.concept, args.steps, args.batch, args.device)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if args.device.startswith("cuda"):
            result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        print(json.dumps(result))
        return
    from concept_fixtures import make_concept

    work = Path(tempfile.mkdtemp())
    model = args.model
    if model is None:
        model = build_model(work / "model")
    elif model == "toy":
        from lego_inversion.backbones import resolve_model

        model = resolve_model(None)
    concept = make_concept(work / "melted")
    results = {}
    for name in ("baseline", "lego"):
        cmd = [sys.executable, __file__, "--only", name, "--model", model, "--concept", str(concept),
               "--steps", str(args.steps), "--batch", str(args.batch), "--device", args.device]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[name] = json.loads(out)
        r = results[name]
        r["samples_per_s"] = r["samples_per_step"] * args.steps / r["seconds"]
        print(f"{name:9s} {r['samples_per_s']:8.2f} samples/s  {args.steps / r['seconds']:6.2f} steps/s  "
              f"peak RSS {r['peak_rss_mib']:7.0f} MiB" + (f"  peak CUDA {r['peak_cuda_mib']:.0f} MiB"
                                                          if "peak_cuda_mib" in r else ""))
    ratio = results["lego"]["samples_per_s"] / results["baseline"]["samples_per_s"]
    print(f"lego / baseline samples/s: {ratio:.2f}x  (model {args.model or 'random 64px SD'}, batch "
          f"{2 * args.batch} samples per UNet call, device {args.device})")


if __name__ == "__main__":
    main()
