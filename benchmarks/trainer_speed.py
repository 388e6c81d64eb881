"""Optimisation speed of `lego invert` against a straightforward Textual Inversion loop, same model and batch.

    python benchmarks/trainer_speed.py                       # a 64 px random SD model built on the fly (CPU)
    python benchmarks/trainer_speed.py --model toy           # the embedded toy-world model
    python benchmarks/trainer_speed.py --model runwayml/stable-diffusion-v1-5 --device cuda --batch 2
    python benchmarks/trainer_speed.py --model sd15-random --device cuda --mixed-precision bf16   # no hub needed
    python benchmarks/trainer_speed.py --model sd15-random --device cuda --mixed-precision bf16 --method ti --batch 4
    python benchmarks/trainer_speed.py --model sd15-random --device cuda --mixed-precision bf16 --runs 8  # batched

The baseline is the textbook TI recipe (as in the diffusers example script): VAE-encode the images every step,
resize the embedding table, let AdamW hold the *whole* table, and copy the original rows back after each step.
The Lego trainer encodes each image once (both flips), trains only the new rows, and shares one UNet call
between the subject and concept batches. Both see the same number of samples per UNet call (2 × --batch; with
`--method ti`, --batch: TI has no subject batch), and with `--mixed-precision` both store the frozen UNet and VAE
in that dtype, as diffusers' textual_inversion.py does (`weight_dtype`). `--runs N` trains N Lego runs jointly
(one UNet call per step for all, `loop.joint_step`) against N times the baseline's work. Each side runs in its own
subprocess so that peak memory is measured separately; the ratio is what to quote.

FLOPs are counted, not estimated: one step of each side runs under `torch.utils.flop_counter.FlopCounterMode`
(forward and the input-gradient backward; frozen weights get no weight gradient, so none is counted), and with
`--peak-tflops` (default: the dense bf16 peak of a known GPU) the achieved rate is printed as MFU.
"""

from __future__ import annotations

import argparse
import dataclasses
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


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}  # dense, vendor


def lego_side(model: str, concept: Path, steps: int, batch: int, device: str, mixed_precision: str,
              method: str = "lego", runs: int = 1, compile: bool = False) -> dict:
    from lego_inversion.concept import load_concept
    from lego_inversion.config import InversionConfig
    from lego_inversion.loop import joint_step
    from lego_inversion.trainer import InversionRun, load_training_backbone

    config = InversionConfig(method=method, batch_size=batch, steps=steps + 2, mixed_precision=mixed_precision,
                             device=device, compile=compile)
    backbone = load_training_backbone(model, config)
    spec = load_concept(concept)
    group = [InversionRun(spec, backbone, dataclasses.replace(config, seed=i), Path(tempfile.mkdtemp()),
                          alias=str(i) if runs > 1 else "") for i in range(runs)]
    per_step = sum(2 * batch if r.config.subject_separation else batch for r in group)
    compiled = backbone._train_unet

    def eager_step():  # the FLOP count runs eagerly (same arithmetic): a dispatch mode would recompile the graph
        backbone._train_unet = None
        try:
            joint_step(group)
        finally:
            backbone._train_unet = compiled

    return timed(lambda: joint_step(group), steps, device, per_step, count_step=eager_step)


def baseline_side(model: str, concept: Path, steps: int, batch: int, device: str, mixed_precision: str,
                  method: str = "lego", runs: int = 1, compile: bool = False) -> dict:
    from diffusers import DDPMScheduler, DiffusionPipeline

    from lego_inversion.concept import load_concept
    from lego_inversion.images import load_image, to_tensor

    spec = load_concept(concept)
    pipe = DiffusionPipeline.from_pretrained(model).to(device)
    unet = pipe.unet
    ldm = hasattr(pipe, "bert")  # LDMTextToImagePipeline (toy model, LDM-256): BERT text side, 77 tokens
    sdxl = hasattr(pipe, "text_encoder_2")  # as diffusers' textual_inversion_sdxl.py: both tables train
    vae = pipe.vqvae if ldm else pipe.vae
    pairs = [(pipe.tokenizer, pipe.bert if ldm else pipe.text_encoder)]
    if sdxl:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    tokens = [spec.subject_token] + spec.tokens
    prompt = spec.prompts["with"].format(subject=spec.subject_token, concept=" ".join(spec.tokens))
    amp = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    use_amp = mixed_precision != "no" and device.startswith("cuda")  # as the Lego trainer: autocast on CUDA only
    for m in (vae, unet):
        m.requires_grad_(False)
        if use_amp:  # diffusers' textual_inversion.py: frozen UNet and VAE stored in weight_dtype
            m.to(amp)
    params, restore, ids = [], [], []
    n = (1 if method == "ti" else 2) * runs  # samples per UNet call = the Lego side's
    for tok, enc in pairs:
        tok.add_tokens(tokens)
        enc.resize_token_embeddings(len(tok))
        enc.requires_grad_(False)
        table = enc.get_input_embeddings().weight
        new_rows = tok.convert_tokens_to_ids(tokens)
        with torch.no_grad():
            for i in new_rows:
                table[i] = table[tok.convert_tokens_to_ids("cube")]
        keep = torch.ones(len(tok), dtype=torch.bool)
        keep[new_rows] = False
        enc.get_input_embeddings().requires_grad_(True)
        params += list(enc.get_input_embeddings().parameters())
        restore.append((table, table.detach().clone(), keep))
        ids.append(tok([prompt] * (n * batch), padding="max_length", max_length=77, truncation=True,
                       return_tensors="pt").input_ids.to(device))
    opt = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.0)
    size = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    images = spec.with_images + spec.without_images
    pixels = torch.stack([to_tensor(load_image(p, size=size)) for p in images]).to(device, vae.dtype)
    time_ids = torch.tensor([[size, size, 0, 0, size, size]] * (n * batch), device=device, dtype=torch.float32)

    def condition() -> tuple[torch.Tensor, dict]:
        if not sdxl:
            return pairs[0][1](ids[0])[0], {}
        first = pairs[0][1](ids[0], output_hidden_states=True)
        second = pairs[1][1](ids[1], output_hidden_states=True)
        hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        return hidden, {"added_cond_kwargs": {"text_embeds": second.text_embeds, "time_ids": time_ids}}

    def step():
        with torch.autocast(torch.device(device).type, dtype=amp, enabled=use_amp):
            idx = torch.randint(len(images), (n * batch,))
            latents = vae.encode(pixels[idx]).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            t = torch.randint(sched.config.num_train_timesteps, (latents.shape[0],), device=device)
            hidden, extra = condition()
            pred = unet(sched.add_noise(latents, noise, t), t, encoder_hidden_states=hidden, **extra).sample
        torch.nn.functional.mse_loss(pred.float(), noise.float()).backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for table, original, keep in restore:
                table[keep] = original[keep]

    return timed(step, steps, device, n * batch)


def timed(step, steps: int, device: str, samples_per_step: int, count_step=None) -> dict:
    """One FLOP-counted step (of `count_step`, default `step`), three warm-up steps (compilation and CUDA-graph
    recording happen there and are reported as "warmup_seconds"), then `steps` timed ones (CUDA work is waited
    for before the clock is read)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        (count_step or step)()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(3):
        step()
    sync()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return {"seconds": time.perf_counter() - start, "samples_per_step": samples_per_step,
            "flops_per_step": counter.get_total_flops(), "warmup_seconds": warmup}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="hub id or folder; 'toy'; or sd15-random / sdxl-random: the released "
                    "architecture with random weights, built on the fly (for GPUs without hub access)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                    help="frozen weights stored in this dtype + autocast, both sides")
    ap.add_argument("--method", choices=("lego", "ti"), default="lego", help="the Lego side's method")
    ap.add_argument("--runs", type=int, default=1, help="Lego runs trained jointly (one UNet call per step)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the Lego side's UNet (CUDA)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak for MFU (default: known GPUs' bf16 peak; none on CPU)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--only", choices=("lego", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--concept", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        side = lego_side if args.only == "lego" else baseline_side
        result = side(args.model, args.concept, args.steps, args.batch, args.device, args.mixed_precision,
                      method=args.method, runs=args.runs, compile=args.compile)
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
    elif model.endswith("-random"):
        from lego_inversion.testing import build_full_size

        started = time.perf_counter()
        model = str(build_full_size(work / model, model.removesuffix("-random")))
        print(f"built {args.model} in {time.perf_counter() - started:.0f} s", flush=True)
    concept = make_concept(work / "melted")
    results = {}
    for name in ("baseline", "lego"):
        cmd = [sys.executable, __file__, "--only", name, "--model", model, "--concept", str(concept),
               "--steps", str(args.steps), "--batch", str(args.batch), "--device", args.device,
               "--mixed-precision", args.mixed_precision, "--method", args.method, "--runs", str(args.runs)]
        cmd += ["--compile"] if args.compile else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[name] = json.loads(out)
        r = results[name]
        r["samples_per_s"] = r["samples_per_step"] * args.steps / r["seconds"]
        r["tflops"] = r["flops_per_step"] * args.steps / r["seconds"] / 1e12
        peak = args.peak_tflops or _known_peak(args.device)
        r["mfu"] = r["tflops"] / peak if peak else None
        print(f"{name:9s} {r['samples_per_s']:8.2f} samples/s  {args.steps / r['seconds']:6.2f} steps/s  "
              f"{r['flops_per_step'] / r['samples_per_step'] / 1e12:.3f} TFLOP/sample  {r['tflops']:.1f} TFLOP/s"
              + (f"  MFU {100 * r['mfu']:.1f} %" if r["mfu"] else "")
              + f"  peak RSS {r['peak_rss_mib']:7.0f} MiB" + (f"  peak CUDA {r['peak_cuda_mib']:.0f} MiB"
                                                             if "peak_cuda_mib" in r else ""), flush=True)
    ratio = results["lego"]["samples_per_s"] / results["baseline"]["samples_per_s"]
    print(f"lego / baseline samples/s: {ratio:.2f}x  (model {args.model or 'random 64px SD'}, method {args.method}, "
          f"{args.runs} run(s), {results['lego']['samples_per_step']} samples per UNet call, device {args.device}, "
          f"mixed precision {args.mixed_precision})")
    if args.json:
        record = {"model": args.model, "device": args.device, "mixed_precision": args.mixed_precision,
                  "method": args.method, "runs": args.runs, "compile": args.compile,
                  "steps": args.steps, "batch": args.batch, "ratio": ratio, **results}
        if args.device.startswith("cuda"):
            record["gpu"] = torch.cuda.get_device_name()
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")


def _known_peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


if __name__ == "__main__":
    main()
