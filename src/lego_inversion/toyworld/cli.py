"""`lego toyworld ...`: render, train the toy model and its oracle, build examples, measure quality.

    lego toyworld render --subject cube --appearance checkered --concept melted --variant 1 --out cube.png
    lego toyworld make-examples --out examples
    lego toyworld train --out runs/toy_model --seed 0          # ~45 min on 2 CPU cores, resumable
    lego toyworld train --out runs/toy_model2 --init-from runs/toy_model --unet-steps 3000   # fine-tune
    lego toyworld install-model runs/toy_model/model           # copy into the package (then commit)
    lego toyworld train-oracle --out runs/oracle               # ~15 min; then copy into toyworld/oracle/
    lego toyworld evaluate-model --n 20 --out runs/toy_eval    # the quality bar, oracle-judged, + grid
    lego toyworld oracle img1.png img2.png                     # what the oracle sees (JSON lines)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("toyworld", help="the procedural toy world, its oracle and its toy T2I model")
    sub = p.add_subparsers(dest="toyworld_command", metavar="ACTION", required=True)

    r = sub.add_parser("render", help="render one scene to a PNG")
    r.add_argument("--subject", required=True)
    r.add_argument("--appearance", default="red")
    r.add_argument("--concept", default="none")
    r.add_argument("--variant", type=int, default=0)
    r.add_argument("--count", type=int, default=1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True)
    r.set_defaults(func=_render)

    e = sub.add_parser("make-examples", help="(re)build the example concept folders deterministically")
    e.add_argument("--out", default="examples")
    e.add_argument("--only", nargs="*", help="example names (default: all)")
    e.set_defaults(func=_make_examples)

    t = sub.add_parser("train", help="train the toy text-to-image model (VAE + UNet) from scratch")
    t.add_argument("--out", default="runs/toy_model")
    t.add_argument("--seed", type=int, default=0)
    # defaults = model.TrainConfig's (kept literal here so that `lego --help` does not import torch)
    t.add_argument("--unet-steps", type=int, default=4000)
    t.add_argument("--vae-steps", type=int, default=2200)
    t.add_argument("--n-images", type=int, default=20000)
    t.add_argument("--time-budget-min", type=float, default=44.0)
    t.add_argument("--p-none", type=float, default=0.30, help="share of plain-subject training images")
    t.add_argument("--p-generic", type=float, default=0.35, help="share of generic-concept images (rest: personalized)")
    t.add_argument("--p-describe", type=float, default=0.5,
                   help="how often a personalized variant's caption describes its look (0: never)")
    t.add_argument("--init-from", default="", metavar="RUN_DIR",
                   help="fine-tune: reuse the VAE of a finished run and start the UNet from its EMA weights")
    t.set_defaults(func=_train)

    i = sub.add_parser("install-model", help="copy a trained export into the package's bundled model")
    i.add_argument("export", help="the `model` folder written by `lego toyworld train`")
    i.set_defaults(func=_install)

    o = sub.add_parser("train-oracle", help="train the oracle classifier on fresh renders")
    o.add_argument("--out", default="runs/oracle")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--steps", type=int, default=1000)
    o.add_argument("--n-images", type=int, default=12000)
    o.set_defaults(func=_train_oracle)

    v = sub.add_parser("evaluate-model", help="oracle-judged quality of the toy model on fresh samples")
    v.add_argument("--model", default=None, help="pipeline folder (default: the bundled toy model)")
    v.add_argument("--n", type=int, default=10, help="samples per (prompt kind x concept)")
    v.add_argument("--steps", type=int, default=25)
    v.add_argument("--guidance", type=float, default=3.0)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", default="runs/toy_eval")
    v.set_defaults(func=_evaluate)

    q = sub.add_parser("oracle", help="print the oracle's reading of images (JSON lines)")
    q.add_argument("images", nargs="+")
    q.set_defaults(func=_oracle)


def _render(args) -> int:
    from ..atomic import atomic_save_image
    from .render import Scene, render

    try:
        scene = Scene(args.subject, args.appearance, args.concept, args.variant, args.count, args.seed)
    except ValueError as exc:
        raise UserError(f"render: {exc}") from None
    atomic_save_image(args.out, render(scene))
    print(args.out)
    return 0


def _make_examples(args) -> int:
    from .examples import EXAMPLES, make_examples

    known = {e.name for e in EXAMPLES}
    bad = sorted(set(args.only or []) - known)
    if bad:
        raise UserError(f"--only: unknown example(s) {bad}; choose from {sorted(known)}")
    for path in make_examples(args.out, args.only):
        print(path)
    return 0


def _train(args) -> int:
    from .model import TrainConfig, train

    cfg = TrainConfig(out=args.out, seed=args.seed, unet_steps=args.unet_steps, vae_steps=args.vae_steps,
                      n_images=args.n_images, time_budget_min=args.time_budget_min, init_from=args.init_from,
                      p_none=args.p_none, p_generic=args.p_generic, p_describe=args.p_describe)
    print(train(cfg))
    return 0


def _install(args) -> int:
    from . import _PARTS, BUNDLED_MODEL

    src = Path(args.export)
    missing = [p for p in _PARTS if not (src / p).exists()]
    if missing:
        raise UserError(f"{src}: not a toy-model export (missing {', '.join(missing)}); "
                        "pass the `model` folder written by `lego toyworld train`")
    tmp = BUNDLED_MODEL.with_name("model.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("bert", "tokenizer"))
    old = BUNDLED_MODEL.with_name("model.old")
    if BUNDLED_MODEL.exists():
        BUNDLED_MODEL.rename(old)
    tmp.rename(BUNDLED_MODEL)
    shutil.rmtree(old, ignore_errors=True)
    print(BUNDLED_MODEL)
    return 0


def _train_oracle(args) -> int:
    from .oracle import OracleTrainConfig, train_oracle

    acc = train_oracle(OracleTrainConfig(out=args.out, seed=args.seed, steps=args.steps, n_images=args.n_images))
    print(json.dumps(acc))
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate_model

    if args.n < 1 or args.steps < 1:
        raise UserError("evaluate-model: --n and --steps must be >= 1")
    report = evaluate_model(args.model, n=args.n, steps=args.steps, guidance=args.guidance, seed=args.seed,
                            out=args.out)
    print(json.dumps(report["summary"], indent=2))
    return 0


def _oracle(args) -> int:
    from PIL import Image, UnidentifiedImageError

    from .oracle import Oracle

    images = []
    for f in args.images:
        try:
            images.append(Image.open(f).convert("RGB"))
        except (OSError, UnidentifiedImageError):
            raise UserError(f"{f}: not a readable image; pass PNG/JPEG files") from None
    for f, pred in zip(args.images, Oracle.load().predict(images)):
        print(json.dumps({"image": f, **pred}))
    return 0

