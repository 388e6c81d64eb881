"""`lego toyworld ...`: render, train the toy model and its oracle, build examples, measure quality.

    lego toyworld render --subject cube --appearance checkered --concept melted --variant 1 --out cube.png
    lego toyworld make-examples --out examples
    lego toyworld train --out runs/toy_model --seed 0          # ~45 min on 2 CPU cores, resumable
    lego toyworld train --out runs/toy_model2 --init-from runs/toy_model --unet-steps 3000   # fine-tune
    lego toyworld install-model runs/toy_model/model           # copy into the package (then commit)
    lego toyworld train-oracle --out runs/oracle               # ~15 min; then copy into toyworld/weights/oracle/
    lego toyworld evaluate-model --n 20 --out runs/toy_eval    # the quality bar, oracle-judged, + grid
    lego toyworld oracle img1.png img2.png                     # what the oracle sees (JSON lines)

The flags of `train` and `train-oracle` are made from the fields of `TrainConfig` / `OracleTrainConfig`
(toyworld/train_configs.py): one `--kebab-case` flag per field, with the field's type, default and help.
`oracle` warns on stderr when an image is not one 64x64 scene (e.g. a grid strip) and still classifies it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ..config import add_arguments, from_arguments
from ..errors import UserError
from .evaluate import EvaluateConfig
from .render import Scene, render
from .train_configs import OracleTrainConfig, TrainConfig


def register(subparsers) -> None:
    p = subparsers.add_parser("toyworld", help="the procedural toy world, its oracle and its toy T2I model")
    sub = p.add_subparsers(dest="toyworld_command", metavar="ACTION", required=True)

    r = sub.add_parser("render", help="render one scene to a PNG")
    add_arguments(r, Scene)
    r.add_argument("--out", required=True, help="the PNG to write")
    r.set_defaults(func=_render)

    e = sub.add_parser("make-examples", help="(re)build the example concept folders deterministically")
    e.add_argument("--out", default="examples")
    e.add_argument("--only", nargs="*", help="example names (default: all)")
    e.set_defaults(func=_make_examples)

    t = sub.add_parser("train", help="train the toy text-to-image model (VAE + UNet), or fine-tune it")
    add_arguments(t, TrainConfig)
    t.set_defaults(func=_train)

    i = sub.add_parser("install-model", help="copy a trained export into the package's bundled model")
    i.add_argument("export", help="the `model` folder written by `lego toyworld train`")
    i.set_defaults(func=_install)

    o = sub.add_parser("train-oracle", help="train the oracle classifier on fresh renders")
    add_arguments(o, OracleTrainConfig)
    o.set_defaults(func=_train_oracle)

    v = sub.add_parser("evaluate-model", help="oracle-judged quality of the toy model on fresh samples")
    add_arguments(v, EvaluateConfig)
    v.set_defaults(func=_evaluate)

    q = sub.add_parser("oracle", help="print the oracle's reading of images (JSON lines); warns when an image "
                       "is not one 64x64 scene")
    q.add_argument("images", nargs="+")
    q.set_defaults(func=_oracle)


def _render(args) -> int:
    from ..atomic import atomic_save_image

    try:
        scene = from_arguments(Scene, args)
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
    from .training import train

    print(train(from_arguments(TrainConfig, args)))
    return 0


def _install(args) -> int:
    from ..atomic import atomic_dir
    from . import BUNDLED_MODEL, MODEL_PARTS

    src = Path(args.export)
    missing = [p for p in MODEL_PARTS if not (src / p).exists()]
    if missing:
        raise UserError(f"{src}: not a toy-model export (missing {', '.join(missing)}); "
                        "pass the `model` folder written by `lego toyworld train`")
    with atomic_dir(BUNDLED_MODEL) as tmp:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("bert", "tokenizer"), dirs_exist_ok=True)
    print(BUNDLED_MODEL)
    return 0


def _train_oracle(args) -> int:
    from .oracle import train_oracle

    print(json.dumps(train_oracle(from_arguments(OracleTrainConfig, args))))
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate_model

    report = evaluate_model(from_arguments(EvaluateConfig, args))
    print(json.dumps(report["summary"], indent=2))
    return 0


def _oracle(args) -> int:
    from PIL import Image, UnidentifiedImageError

    from .oracle import Oracle, scene_warning

    images = []
    for f in args.images:
        try:
            images.append(Image.open(f).convert("RGB"))
        except (OSError, UnidentifiedImageError):
            raise UserError(f"{f}: not a readable image; pass PNG/JPEG files") from None
    for f, image, pred in zip(args.images, images, Oracle.load().predict(images)):
        warning = scene_warning(image.size)
        if warning:
            print(f"lego: warning: {f}: {warning}", file=sys.stderr)
        print(json.dumps({"image": f, **pred}))
    return 0
