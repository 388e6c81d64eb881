"""Real-size figures on a GPU that cannot reach the hub: the released SD 1.5 / SDXL architectures, random weights.

    python benchmarks/real_size.py --family sd15 --out runs/real_size                 # CUDA, builds the model
    python benchmarks/real_size.py --family sdxl --out runs/real_size --invert-steps 100
    python benchmarks/real_size.py --model /tmp/tiny_sd --family sd15 --device cpu --out /tmp/rs \\
        --speed-steps 2 --invert-steps 4 --generate-steps 2                         # smoke test of the script

Stages, each timed from the outside and written to OUT/<family>.json as soon as it ends (a run cut short keeps
what it measured):
  build     testing.build_full_size (skipped with --model)
  speed_*   benchmarks/trainer_speed.py, Lego vs the textbook TI loop, fp32 and bf16 autocast
  invert    `lego invert` end to end (bf16 autocast, checkpoints, validation grid at the end)
  generate  `lego generate`, 4 images in one batch, fp16
  load_ti   the run's diffusers/ files through diffusers' own `pipe.load_textual_inversion`, rows compared
The weights are noise, so only speed, memory and "the real-size path runs" are measured, never image quality.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "melted_cube"


def run_stage(record: dict, name: str, cmd: list[str], out_json: Path) -> bool:
    """Run one stage in a subprocess, time it, store {seconds, rc} (+ its JSON result, if it wrote one)."""
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    record[name] = {"seconds": round(time.perf_counter() - started, 2), "rc": rc}
    result = out_json.parent / f"{out_json.stem}.{name}.json"
    if result.exists():
        record[name]["result"] = json.loads(result.read_text(encoding="utf-8"))
    out_json.write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(f"== {name}: rc {rc}, {record[name]['seconds']:.1f} s", flush=True)
    return rc == 0


def load_ti(model: str, run: str, device: str, result: str) -> None:
    """Load every diffusers/ file of the run with diffusers' own loader; compare each row with the run's."""
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file

    from lego_inversion.formats import load_learned

    concept = load_learned(run)
    pipe = DiffusionPipeline.from_pretrained(model).to(device)
    slots = [("text_encoder", "tokenizer")]
    if hasattr(pipe, "text_encoder_2"):  # SDXL: one diffusers/ subfolder per text encoder
        slots.append(("text_encoder_2", "tokenizer_2"))
    worst, loaded = 0.0, 0
    for s, (encoder_name, tokenizer_name) in enumerate(slots):
        encoder, tokenizer = getattr(pipe, encoder_name), getattr(pipe, tokenizer_name)
        folder = Path(run) / "diffusers" / (encoder_name if len(slots) > 1 else "")
        for path in sorted(folder.glob("*.safetensors")):
            (token,) = load_file(path)
            pipe.load_textual_inversion(str(path), token=token, text_encoder=encoder, tokenizer=tokenizer)
            row = encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(token)]
            worst = max(worst, (row.float().cpu() - concept.vectors[token][s].float()).abs().max().item())
            loaded += 1
    Path(result).write_text(json.dumps({"files": loaded, "max_abs_diff": worst}), encoding="utf-8")
    if loaded != len(slots) * len(concept.vectors) or worst > 1e-6:
        raise SystemExit(f"{loaded} files loaded; rows differ from learned_embeds by up to {worst}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=("sd15", "sdxl"), required=True)
    ap.add_argument("--model", help="an existing model folder instead of building the random real-size one")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lego_real_size"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--speed-steps", type=int, default=20)
    ap.add_argument("--invert-steps", type=int, default=400)
    ap.add_argument("--generate-steps", type=int, default=50)
    ap.add_argument("--skip", nargs="*", default=[], help="stage names to leave out")
    ap.add_argument("--load-ti", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load_ti:
        return load_ti(*args.load_ti[:2], args.device, args.load_ti[2])
    args.out.mkdir(parents=True, exist_ok=True)
    out_json = args.out / f"{args.family}.json"
    record: dict = {"family": args.family, "device": args.device, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        record["gpu"] = torch.cuda.get_device_name()
    py = sys.executable
    model = args.model or str(args.work / args.family)
    if not args.model and "build" not in args.skip:
        code = ("from lego_inversion.testing import build_full_size; "
                f"build_full_size({model!r}, {args.family!r})")
        if not run_stage(record, "build", [py, "-c", code], out_json):
            raise SystemExit("building the model failed")
    run_dir, gen_dir = args.work / f"{args.family}_run", args.work / f"{args.family}_gen"
    stages = [
        *[(f"speed_{mp}", [py, "benchmarks/trainer_speed.py", "--model", model, "--device", args.device,
                           "--steps", str(args.speed_steps), "--mixed-precision", mp,
                           "--json", str(args.out / f"{args.family}.speed_{mp}.json")])
          for mp in ("no", "bf16")],
        ("invert", [py, "-m", "lego_inversion", "invert", str(EXAMPLE), "--model", model, "--out", str(run_dir),
                    "--steps", str(args.invert_steps), "--mixed-precision", "bf16", "--device", args.device,
                    "--checkpoint-every", str(max(args.invert_steps // 4, 1)), "--no-progress"]),
        ("generate", [py, "-m", "lego_inversion", "generate", "--concept", str(run_dir), "--model", model,
                      "--prompt", "a photo of a dog that is {concept}", "--out", str(gen_dir), "--num-images", "4",
                      "--batch-size", "4", "--steps", str(args.generate_steps), "--dtype",
                      "fp16" if args.device.startswith("cuda") else "float32",
                      "--device", args.device]),
        ("load_ti", [py, __file__, "--family", args.family, "--out", str(args.out), "--device", args.device,
                     "--load-ti", model, str(run_dir), str(args.out / f"{args.family}.load_ti.json")]),
    ]
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(gen_dir, ignore_errors=True)
    for name, cmd in stages:
        if name not in args.skip:
            run_stage(record, name, cmd, out_json)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
