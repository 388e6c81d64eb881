"""`lego invert`, `lego generate`, `lego export`: argument parsing only; the work is in trainer/generation/formats.

    lego invert CONCEPT_DIR --out OUT_DIR [--model ID_OR_PATH] [--method lego|ti|cl-only|ss-only]
                [--steps N] [--seed S] [--resume] [--lr LR] [--context-weight λ] [--temperature τ] ...
    lego generate --concept OUT_DIR [--concept OTHER] --prompt P --out DIR [--model M] [--num-images N] [--seed S]
    lego export OUT_DIR --format a1111|comfyui|kohya|diffusers --out PATH [--include-subject]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import METHODS, InversionConfig

DEFAULTS = InversionConfig()


def register(subparsers) -> None:
    p = subparsers.add_parser("invert", help="learn a concept's tokens from with/ and without/ images",
                              description="Learn <subj> and the concept tokens of CONCEPT_DIR (Lego, Eq. 3).")
    p.add_argument("concept_dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="run folder to create (or continue with --resume)")
    p.add_argument("--model", default=None, help="diffusers model id or folder (default: the embedded toy model)")
    p.add_argument("--method", choices=METHODS, default=DEFAULTS.method)
    p.add_argument("--steps", type=int, default=DEFAULTS.steps)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR's last checkpoint")
    p.add_argument("--lr", dest="learning_rate", type=float, default=DEFAULTS.learning_rate,
                   help="AdamW learning rate (default: the model's; 5e-3 for CLIP models, 1e-2 for the toy model)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--context-weight", type=float, default=DEFAULTS.context_weight, help="λ of Eq. 3")
    p.add_argument("--temperature", type=float, default=DEFAULTS.temperature, help="τ of Eq. 2")
    p.add_argument("--subject-from-with", action=argparse.BooleanOptionalAction, default=DEFAULTS.subject_from_with,
                   help="let <subj> learn from with/ images too (§4.3)")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every)
    p.add_argument("--validate-every", type=int, default=DEFAULTS.validate_every)
    p.add_argument("--validation-steps", type=int, default=DEFAULTS.validation_steps)
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=DEFAULTS.mixed_precision)
    p.add_argument("--device", default=None)
    p.add_argument("--allow-pickle", action="store_true", help="allow .bin/.ckpt model weights (unsafe)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_invert)

    g = subparsers.add_parser("generate", help="apply learned concepts to new subjects, compose several",
                              description="Generate images; {name} in the prompt is a whole learned concept.")
    g.add_argument("--concept", action="append", default=[], type=Path, help="a lego invert run folder (repeat)")
    g.add_argument("--prompt", action="append", required=True, help="prompt (repeat for several)")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--model", default=None, help="default: the concepts' base model, else the toy model")
    g.add_argument("--num-images", type=int, default=4, help="images per prompt")
    g.add_argument("--seed", type=int, default=0, help="first seed; image k of a prompt uses seed + k")
    g.add_argument("--steps", type=int, default=50, help="sampler steps")
    g.add_argument("--guidance-scale", type=float, default=None, help="default: the model's")
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--subject", default=None, help="the target subject, recorded in images.jsonl for evaluation")
    g.add_argument("--batch-size", type=int, default=4)
    g.add_argument("--device", default=None)
    g.add_argument("--dtype", default="float32")
    g.add_argument("--allow-pickle", action="store_true")
    g.set_defaults(func=run_generate)

    e = subparsers.add_parser("export", help="write a learned concept for Automatic1111, ComfyUI/kohya or diffusers")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--format", required=True, choices=("a1111", "comfyui", "kohya", "diffusers"))
    e.add_argument("--out", type=Path, required=True, help="file (a1111/comfyui/kohya) or folder (diffusers)")
    e.add_argument("--include-subject", action="store_true", help="also export the <subj> token")
    e.set_defaults(func=run_export)


def run_invert(args) -> int:
    from .trainer import invert

    config = InversionConfig(
        method=args.method, steps=args.steps, seed=args.seed, learning_rate=args.learning_rate,
        batch_size=args.batch_size, context_weight=args.context_weight, temperature=args.temperature,
        subject_from_with=args.subject_from_with, resolution=args.resolution,
        checkpoint_every=args.checkpoint_every, validate_every=args.validate_every,
        validation_steps=args.validation_steps, mixed_precision=args.mixed_precision, device=args.device)
    out = invert(args.concept_dir, args.out, config, model=args.model, resume=args.resume,
                 allow_pickle=args.allow_pickle, progress=not args.no_progress)
    print(f"learned tokens written to {out / 'learned_embeds.safetensors'}; validation grids in {out / 'validation'}")
    return 0


def run_generate(args) -> int:
    from .atomic import atomic_save_image
    from .errors import UserError
    from .generation import load_generator
    from .manifest import write_manifest
    from .images import make_grid

    if args.num_images < 1:
        raise UserError("--num-images must be at least 1")
    gen = load_generator(args.model, args.concept, device=args.device, dtype=args.dtype,
                         allow_pickle=args.allow_pickle)
    prompts = [p for p in args.prompt for _ in range(args.num_images)]
    seeds = [args.seed + k for _ in args.prompt for k in range(args.num_images)]
    for p in args.prompt:
        gen.expand_prompt(p)  # fail on a bad placeholder before any work
    images = gen.generate(prompts, seeds, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                          batch_size=args.batch_size, negative_prompt=args.negative_prompt)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (image, prompt, seed) in enumerate(zip(images, prompts, seeds)):
        name = f"{i:04d}.png"
        atomic_save_image(args.out / name, image)
        records.append({"file": name, "prompt": prompt, "expanded_prompt": gen.expand_prompt(prompt),
                        "seed": seed, "concepts": list(gen.concepts), "model": gen.backbone.model_id,
                        "method": _method(gen), "subject": args.subject})
    write_manifest(args.out, records)
    grid = atomic_save_image(args.out / "grid.png", make_grid(images, cols=args.num_images))
    print(f"{len(images)} images in {args.out}; grid: {grid}")
    return 0


def _method(gen) -> str | None:
    methods = {c.meta.get("method") for c in gen.concepts.values()}
    return methods.pop() if len(methods) == 1 else ("text" if not methods else None)


def run_export(args) -> int:
    from .formats import export, load_learned

    written = export(load_learned(args.run_dir), args.format, args.out, include_subject=args.include_subject)
    for path in written:
        print(path)
    return 0
