"""`lego invert`, `lego generate`, `lego export`, `lego average`: argument parsing only; the work is in
trainer/generation/formats/averaging.

    lego invert CONCEPT_DIR [DIR ...] --out OUT [--model ID_OR_PATH] [--method M [M ...]] [--seed S [S ...]]
                [--resume] [--steps N] [--lr LR] ...   (every InversionConfig field is a flag: config.py)
    lego generate --concept OUT_DIR [--concept OTHER] --prompt P --out DIR [--overwrite] [--model M] [--num-images N]
                  [--seed S] [--subject S] [--about NAME] [--attend-and-excite WORD [WORD ...]] [--no-progress] ...
    lego export OUT_DIR --format a1111|comfyui|kohya|diffusers [--out DIR_OR_FILE] [--include-subject]
    lego average RUN_DIR RUN_DIR [...] --out DIR
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .config import METHODS, InversionConfig, add_arguments, from_arguments

DEFAULTS = InversionConfig()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "invert", help="learn a concept's tokens from with/ and without/ images",
        description="Learn <subj> and the concept tokens of CONCEPT_DIR (Lego, Eq. 3). Several folders, methods "
                    "or seeds train together (one UNet call per step for all runs) into "
                    "OUT/<concept>-<method>-s<seed>/.")
    p.add_argument("concept_dir", type=Path, nargs="+", help="concept folder(s): with/, without/, concept.toml")
    p.add_argument("--out", type=Path, required=True,
                   help="the run folder (one run) or the folder of run folders (several); --resume continues")
    p.add_argument("--model", default=None, help="diffusers model id or folder (default: the embedded toy model)")
    p.add_argument("--method", nargs="+", choices=METHODS, default=[DEFAULTS.method],
                   help=dataclasses.fields(InversionConfig)[0].metadata["help"] + f" (default: {DEFAULTS.method})")
    p.add_argument("--seed", type=int, nargs="+", default=[DEFAULTS.seed], help="random seed(s) (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue from each run's last checkpoint")
    p.add_argument("--average-seeds", type=int, nargs="?", const=0, default=None, metavar="K",
                   help="with several --seed: also write OUT/<concept>-<method>-mean/, the seeds' rows averaged "
                        "token by token; with K, only the K seeds whose look scores are best (--select-by look) "
                        "(averaging.py; docs/inversion_quality.md (v))")
    add_arguments(p, InversionConfig)
    p.add_argument("--allow-pickle", action="store_true", help="allow .bin/.ckpt model weights (unsafe)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_invert)

    g = subparsers.add_parser(
        "generate", help="apply learned concepts to new subjects, compose several",
        description="Generate images. In a prompt {name} is a whole learned concept (NAME: its concept name or its "
                    "run folder's name), {name.subject} its subject token, and with one concept loaded {concept} "
                    "and {subject}; write {{ and }} for literal braces. Image k of a prompt starts from seed + k.")
    g.add_argument("--concept", action="append", default=[], type=Path,
                   help="a `lego invert` run folder; repeat to compose several (default: none, plain prompts)")
    g.add_argument("--prompt", action="append", required=True, help="prompt; repeat for several")
    g.add_argument("--out", type=Path, required=True,
                   help="new or empty folder for the PNGs, images.jsonl and grid.png")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the image set already in --out (the whole folder, swapped in at the end)")
    g.add_argument("--model", default=None, help="diffusers model id or folder (default: the concepts' base "
                   "model; the embedded toy model for plain prompts)")
    g.add_argument("--num-images", type=int, default=4, help="images per prompt (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0,
                   help="first seed; image k of a prompt uses seed + k (default: %(default)s)")
    g.add_argument("--steps", type=int, default=50, help="sampler steps (default: %(default)s)")
    g.add_argument("--guidance-scale", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's own)")
    g.add_argument("--concept-guidance-scale", type=float, default=None,
                   help="guide the learned concept tokens at this scale and the rest of the prompt at "
                        "--guidance-scale (guidance.py; 1.5x the UNet passes; default: the ratio the run chose "
                        "with --select-guidance times the guidance scale, else the model's concept_guidance_scale, "
                        "else off)")
    g.add_argument("--concept-floor", type=float, default=None,
                   help="leave the learned concept tokens out of the steps below this fraction of the noise "
                        "schedule, where a run trained at that --timestep-min never fitted them (guidance.py; 0: "
                        "every step; default: the model's concept_floor, the toy model's 0.5, else 0)")
    g.add_argument("--negative-prompt", default=None,
                   help="what classifier-free guidance steers away from instead of the empty prompt; needs a "
                        "guidance scale above 1, and the SD / SDXL pipelines (LDM-256 and the toy model have none) "
                        "(default: none)")
    g.add_argument("--subject", default=None,
                   help="the target subject the prompts name (e.g. ball), recorded in images.jsonl (default: none)")
    g.add_argument("--about", action="append", default=[], metavar="NAME",
                   help="plain prompts only: the concept this baseline image set stands for, recorded in "
                        "images.jsonl so that it pairs with a learned set by concept, subject and seed; repeat for "
                        "a composition (default: none; with --concept the loaded concepts are recorded)")
    _add_excite_arguments(g)
    g.add_argument("--batch-size", type=int, default=4, help="images per sampler call (default: %(default)s)")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--dtype", default="float32", help="float32, fp16 or bf16 (default: %(default)s)")
    g.add_argument("--allow-pickle", action="store_true", help="allow .bin/.ckpt model weights (unsafe)")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bars (neither ours nor diffusers'/transformers' loading and sampling bars)")
    g.set_defaults(func=run_generate)

    e = subparsers.add_parser(
        "export", help="write a learned concept for Automatic1111, ComfyUI/kohya or diffusers",
        description="Write a learned concept's tokens as one multi-vector embedding for another tool. Automatic1111, "
                    "ComfyUI and kohya take the trigger word from the file name, so the file is named after the "
                    "concept: `lego export RUN --format a1111 --out embeddings/` writes embeddings/NAME.pt, NAME "
                    "being the concept's name (concept.json). Prompt with NAME in Automatic1111 and kohya, "
                    "`embedding:NAME` in ComfyUI. Concepts learned on a BERT text encoder (LDM-256, the toy model) "
                    "export only as diffusers: the other tools cannot load them.")
    e.add_argument("run_dir", type=Path, help="a `lego invert` run folder")
    e.add_argument("--format", required=True, choices=("a1111", "comfyui", "kohya", "diffusers"),
                   help="a1111: Automatic1111 .pt (.safetensors for SDXL); comfyui/kohya: .safetensors; "
                        "diffusers: one file per token for load_textual_inversion")
    e.add_argument("--out", default=None,
                   help="a folder to write <concept>.pt/.safetensors into, or a file path whose stem becomes the "
                        "trigger word (warned when it differs from the concept name); for diffusers the folder of "
                        "per-token files (default: the current folder; diffusers: ./<concept>-diffusers)")
    e.add_argument("--include-subject", action="store_true",
                   help="also export the <subj> token (as <name>-subject for a1111/comfyui/kohya)")
    e.set_defaults(func=run_export)

    a = subparsers.add_parser(
        "average", help="average the learned rows of several seeds of one concept",
        description="Write the mean of several finished runs' learned rows (one concept, method and model; a "
                    "uniform model soup, averaging.py) as a run folder that generate and export load.")
    a.add_argument("run_dir", type=Path, nargs="+", help="finished `lego invert` run folders")
    a.add_argument("--out", type=Path, required=True,
                   help="the folder to write (an earlier average there is replaced; any other non-empty folder is "
                        "refused)")
    a.set_defaults(func=run_average)


def _add_excite_arguments(g) -> None:
    """Attend-and-Excite (Chefer et al. 2023) flags; defaults are the authors' and diffusers' (attend_excite.py)."""
    from .attend_excite import ExciteSettings

    d = ExciteSettings()
    g.add_argument("--attend-and-excite", nargs="+", default=None, metavar="WORD",
                   help="excite these words of every prompt while sampling (Attend-and-Excite, Chefer et al. 2023): "
                        "plain words (ball), tokens (<melted>) or concept placeholders ({melted}); recorded as method "
                        "attend-excite (default: off)")
    g.add_argument("--ae-steps", type=int, default=None, metavar="N",
                   help=f"excite during the first N sampler steps (default: {d.max_step}, of 50)")
    g.add_argument("--ae-thresholds", nargs="+", default=None, metavar="STEP:T",
                   help="iterative refinement: at STEP, update until every word's smoothed maximum attention is >= T "
                        f"(default: {' '.join(f'{s}:{t}' for s, t in d.thresholds)})")
    g.add_argument("--ae-max-refinement", type=int, default=None, metavar="N",
                   help=f"at most N updates per refinement (default: {d.max_refinement})")
    g.add_argument("--ae-scale-factor", type=float, default=None, metavar="F",
                   help=f"step size α_t = scale factor · sqrt(scale range at step t) (default: {d.scale_factor:g})")
    g.add_argument("--ae-scale-range", type=float, nargs=2, default=None, metavar=("FIRST", "LAST"),
                   help=f"interpolated over the sampler steps (default: {d.scale_range[0]:g} {d.scale_range[1]:g})")
    g.add_argument("--ae-sigma", type=float, default=None, metavar="S",
                   help=f"Gaussian smoothing of the attention maps (default: {d.sigma:g})")
    g.add_argument("--ae-kernel-size", type=int, default=None, metavar="K",
                   help=f"odd side of the smoothing kernel (default: {d.kernel_size})")
    g.add_argument("--ae-no-smoothing", action="store_true", help="no Gaussian smoothing (default: smoothing)")
    g.add_argument("--ae-resolution", type=int, default=None, metavar="R",
                   help="use the R×R cross-attention maps (default: the side nearest to max(latent side / 4, 8): "
                        "16 on SD 1.x at 512 px, 32 on SDXL, 8 on LDM-256 and the toy model)")


def _excite_settings(args):
    """ExciteSettings from the --ae-* flags (None without --attend-and-excite; the flags alone are an error)."""
    from .attend_excite import ExciteSettings
    from .errors import UserError

    given = {k: v for k, v in vars(args).items() if k.startswith("ae_") and v not in (None, False)}
    if args.attend_and_excite is None:
        if given:
            raise UserError(f"--{next(iter(given)).replace('_', '-')} needs --attend-and-excite WORD ...")
        return None
    thresholds = ExciteSettings().thresholds
    if args.ae_thresholds is not None:
        try:
            thresholds = tuple((int(a), float(b)) for a, b in (t.split(":") for t in args.ae_thresholds))
        except ValueError:
            raise UserError(f"--ae-thresholds {' '.join(args.ae_thresholds)}: write STEP:T, e.g. 0:0.05 10:0.5"
                            ) from None
    fields = {"max_step": args.ae_steps, "max_refinement": args.ae_max_refinement, "scale_factor": args.ae_scale_factor,
              "scale_range": args.ae_scale_range, "sigma": args.ae_sigma, "kernel_size": args.ae_kernel_size,
              "resolution": args.ae_resolution}
    return ExciteSettings(thresholds=thresholds, smooth=not args.ae_no_smoothing,
                          **{k: v for k, v in fields.items() if v is not None})


def run_invert(args) -> int:
    from .errors import UserError
    from .formats import EMBEDS_FILE
    from .sweep import invert_many
    from .trainer import invert

    if args.no_progress:
        from .backbones import quiet_progress_bars

        quiet_progress_bars()
    config = from_arguments(InversionConfig, args, method=args.method[0], seed=args.seed[0])
    one_seed = len(set(args.seed)) < 2
    if config.race_steps and one_seed:
        raise UserError(f"--race {config.race_steps} races several seeds; give two or more --seed, or leave --race out")
    average = args.average_seeds is not None
    if average and (one_seed or config.race_steps):
        raise UserError("--average-seeds averages every seed's rows: give two or more --seed, and no --race (whose "
                        "losers stop early)")
    if average and args.average_seeds and not 2 <= args.average_seeds <= len(set(args.seed)):
        raise UserError(f"--average-seeds {args.average_seeds}: average between 2 and the {len(set(args.seed))} "
                        "seeds given (or leave K out for all)")
    if args.average_seeds and (config.select_by not in (None, "look") or config.select_every == 0):
        raise UserError(f"--average-seeds {args.average_seeds} ranks the seeds by their look score: add --select-by "
                        "look (with --select-every K), or leave K out to average every seed")
    if len(args.concept_dir) == len(args.method) == len(args.seed) == 1:
        out = invert(args.concept_dir[0], args.out, config, model=args.model, resume=args.resume,
                     allow_pickle=args.allow_pickle, progress=not args.no_progress)
        print(f"learned tokens written to {out / 'learned_embeds.safetensors'}; validation grid in "
              f"{out / 'validation'}")
        return 0
    folders = invert_many(args.concept_dir, args.method, args.seed, args.out, config, model=args.model,
                          resume=args.resume, allow_pickle=args.allow_pickle, progress=not args.no_progress,
                          average=average, top=args.average_seeds or 0)
    done = [f for f in folders if (f / EMBEDS_FILE).is_file()]
    stopped = f" ({len(folders) - len(done)} stopped when they lost their race)" if len(done) < len(folders) else ""
    print(f"{len(done)} run{'s' * (len(done) != 1)} written under {args.out}{stopped}")
    return 0


def run_generate(args) -> int:
    from .errors import UserError
    from .backbones import quiet_progress_bars
    from .generation import check_output_folder, load_generator, write_image_set
    from .manifest import ImageRecord

    if args.num_images < 1:
        raise UserError("--num-images must be at least 1")
    if args.about and args.concept:
        raise UserError("--about is for plain-prompt baselines; with --concept the images are about the loaded "
                        "concepts, so drop --about")
    about = tuple(a.strip() for a in args.about)
    for name in about:
        if not name or "+" in name:
            raise UserError(f"--about {name!r}: give a concept name (not empty, no '+')")
    excite = _excite_settings(args)
    check_output_folder(args.out, overwrite=args.overwrite)
    if args.no_progress:
        quiet_progress_bars()
    gen = load_generator(args.model, args.concept, device=args.device, dtype=args.dtype,
                         allow_pickle=args.allow_pickle)
    expanded = {p: gen.expand_prompt(p, where="--prompt") for p in args.prompt}  # bad placeholders fail here
    words = args.attend_and_excite
    if excite is not None:  # a word missing from a prompt fails here, before any sampling
        gen.excite_positions(list(args.prompt), words)
    prompts = [p for p in args.prompt for _ in range(args.num_images)]
    seeds = [args.seed + k for _ in args.prompt for k in range(args.num_images)]
    images = gen.generate(prompts, seeds, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                          batch_size=args.batch_size, negative_prompt=args.negative_prompt,
                          progress=not args.no_progress, excite=words, excite_settings=excite,
                          concept_guidance_scale=args.concept_guidance_scale, concept_floor=args.concept_floor)
    concepts, method, extra = tuple(gen.concepts) or about, _method(gen), {}
    if excite is not None:  # the paper's baseline for a plain prompt; "<method>+attend-excite" on learned concepts
        from .attend_excite import METHOD

        method = METHOD if not gen.concepts else (f"{method}+{METHOD}" if method else None)
        extra = {"excite": list(words), "attend_excite": excite.to_json()}
    records = [ImageRecord(path=Path(f"{i:04d}.png"), prompt=prompt, seed=seed, subject=args.subject,
                           method=method, concepts=concepts, expanded_prompt=expanded[prompt],
                           model=gen.backbone.model_id, extra=dict(extra))
               for i, (prompt, seed) in enumerate(zip(prompts, seeds))]
    grid = write_image_set(args.out, images, records, cols=args.num_images)
    print(f"{len(images)} images in {args.out}; grid: {grid}")
    return 0


def _method(gen) -> str | None:
    """The loaded concepts' method; "text" for plain prompts; None when composed concepts differ."""
    methods = {c.meta.get("method") for c in gen.concepts.values()}
    return methods.pop() if len(methods) == 1 else ("text" if not methods else None)


def run_export(args) -> int:
    from .formats import export, load_learned

    written = export(load_learned(args.run_dir), args.format, args.out, include_subject=args.include_subject)
    for path in written:
        print(path)
    return 0


def run_average(args) -> int:
    from .averaging import average_runs

    out = average_runs(args.run_dir, args.out)
    print(f"averaged rows of {len(args.run_dir)} runs written to {out / 'learned_embeds.safetensors'}")
    return 0
