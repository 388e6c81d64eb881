"""The `lego` command: a thin layer over the package's public functions.

    lego invert examples/melted_cube --out runs/melted      # learn <subj> + concept tokens (trainer.py)
    lego generate --concept runs/melted --prompt "a photo of a sphere that is {melted}" --out gen/
    lego export runs/melted --format a1111 --out melted.safetensors
    lego toyworld ...   lego evaluate ...   lego study ...

Each command group lives beside the code it drives and exposes `register(subparsers)`, which adds its
sub-parsers and sets `func(args) -> int`. A `UserError` anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import UserError

# Modules that each expose `register(subparsers)`; the order is the order in `lego --help`.
COMMAND_MODULES = [
    "lego_inversion.commands",  # invert, generate, export
    "lego_inversion.toyworld.cli",
    "lego_inversion.evaluation.cli",
    "lego_inversion.study.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lego", description="Lego concept inversion for text-to-image diffusion models (ECCV 2024)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Skip a command group that is not installed or whose optional dependencies are missing (e.g. the
            # study app without fastapi); a missing module *inside* an installed group is a bug and is raised.
            missing = exc.name or ""
            if missing.startswith("lego_inversion") and not name.startswith(missing):
                raise
            continue
        module.register(subparsers)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"lego: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lego: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
