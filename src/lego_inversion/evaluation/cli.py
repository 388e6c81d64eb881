"""`lego evaluate`: generate (or read) images and score them as in §5.3 / Table 2 of Lego.

    lego evaluate eval.toml --out eval/                                  # config: docs/evaluation.md
    lego evaluate --concept runs/frozen --concept runs/frozen_ti --target "toy bear" --num-images 200 --out eval/
    lego evaluate --concept runs/three_stars --target balls --out eval/   # toy world: oracle-judged, offline
    accelerate launch --num_processes 4 -m lego_inversion evaluate eval.toml --out eval/   # several GPUs

Re-running the same command resumes: images and scores already on disk are skipped.
"""

from __future__ import annotations

import dataclasses

from ..errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score learned concepts: VQA, counting, CLIP/DINO leakage (Table 2)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", help="evaluation TOML (see docs/evaluation.md)")
    p.add_argument("--out", required=True, help="output folder (images/, scores/, report.*); reused to resume")
    p.add_argument("--concept", action="append", default=[], metavar="FOLDER",
                   help="learned concept folder (lego invert output); repeat for Lego, ablations, TI")
    p.add_argument("--target", action="append", default=[], metavar="TEXT", help="target subject, e.g. 'toy bear'")
    p.add_argument("--num-images", type=int, help="images per concept x target x method (paper: 200)")
    p.add_argument("--seed", type=int, help="first seed; image i uses seed + i for every method")
    p.add_argument("--methods", help="comma-separated methods in report order, e.g. lego,ti,text")
    p.add_argument("--metrics", help="comma-separated subset of vqa,count,clip,dino,oracle (default: oracle for "
                   "toy-world models, which needs no download; vqa,count,clip,dino for others)")
    p.add_argument("--model", help="diffusion backbone (hub id or diffusers folder); default: each concept's")
    p.add_argument("--steps", type=int, help="denoising steps (default 50)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale")
    p.add_argument("--concept-guidance", type=float,
                   help="learned methods: guide the concept tokens at this scale (lego generate "
                        "--concept-guidance-scale; default: the model's)")
    p.add_argument("--concept-floor", type=float,
                   help="learned methods: leave the concept tokens out below this fraction of the noise schedule "
                        "(lego generate --concept-floor; default: the model's)")
    p.add_argument("--gen-batch-size", type=int, help="images per generation batch")
    p.add_argument("--vqa-model", help="BLIP-2 checkpoint (default Salesforce/blip2-flan-t5-xl)")
    p.add_argument("--detector", help="OWLv2 / OWL-ViT / Grounding DINO checkpoint")
    p.add_argument("--detector-threshold", type=float, help="detection score threshold (default 0.3)")
    p.add_argument("--clip-model", help="CLIP checkpoint")
    p.add_argument("--dino-model", help="DINOv2 checkpoint")
    p.add_argument("--batch-size", type=int, help="images per evaluator batch (default 8)")
    p.add_argument("--device", help="device for all models (default: this process's accelerator)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="dtype of the generator and evaluator models (default float32)")
    p.add_argument("--no-generate", action="store_true", help="only score images already on disk")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [x.strip() for x in value.split(",") if x.strip()]


def build_config(args):
    """The EvalConfig from the TOML and/or --concept folders, with command-line overrides applied."""
    from .config import config_from_concept_folders, load_eval_config

    if args.config and args.concept:
        raise UserError("give either an evaluation TOML or --concept folders, not both")
    if args.config:
        cfg = load_eval_config(args.config)
    elif args.concept:
        cfg = config_from_concept_folders(args.concept, targets=list(args.target))
    else:
        raise UserError("nothing to evaluate: pass an evaluation TOML or --concept FOLDER --target TEXT")
    top = {"targets": list(args.target) or None, "num_images": args.num_images, "seed": args.seed,
           "methods": _csv(args.methods), "metrics": _csv(args.metrics)}
    gen = {"model": args.model, "num_inference_steps": args.steps, "guidance_scale": args.guidance,
           "concept_guidance_scale": args.concept_guidance, "concept_floor": args.concept_floor,
           "batch_size": args.gen_batch_size, "dtype": args.dtype}
    models = {"vqa": args.vqa_model, "detector": args.detector, "detector_threshold": args.detector_threshold,
              "clip": args.clip_model, "dino": args.dino_model, "batch_size": args.batch_size,
              "device": args.device, "dtype": args.dtype}
    drop = lambda d: {k: v for k, v in d.items() if v is not None}  # noqa: E731
    return dataclasses.replace(cfg, generation=dataclasses.replace(cfg.generation, **drop(gen)),
                               models=dataclasses.replace(cfg.models, **drop(models)), **drop(top))


def run(args) -> int:
    from .runner import run_evaluation

    cfg = build_config(args)
    run_evaluation(cfg, args.out, generate=not args.no_generate, progress=not args.no_progress)
    return 0
