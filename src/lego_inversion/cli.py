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
import logging
import os
import sys

from .errors import UserError

# Modules that each expose `register(subparsers)`; the order is the order in `lego --help`.
COMMAND_MODULES = [
    "lego_inversion.commands",  # invert, generate, export
    "lego_inversion.toyworld.cli",
    "lego_inversion.evaluation.cli",
    "lego_inversion.study.cli",
    "lego_inversion.lexicon",  # suggest-words
]


NO_TORCH_COMMANDS = ("study",)  # the study app never runs a model: no thread policy, no torch import


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lego", description="Lego concept inversion for text-to-image diffusion models (ECCV 2024)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: the cores not already busy, from the load average; "
                             "also LEGO_THREADS)")
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
    _show_defaults(parser)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's help names its default: add "(default: X)" where the help does not already say it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)
            continue
        default = action.default
        if (not action.option_strings or action.help is argparse.SUPPRESS or default in (None, False, [])
                or default is argparse.SUPPRESS or "default" in (action.help or "").lower()):
            continue
        action.help = f"{action.help} (default: %(default)s)" if action.help else "default: %(default)s"


def default_threads() -> tuple[int, str]:
    """(threads, why): the usable cores minus those already busy (1-minute load average), at least 1.

    torch's default (every core) collapses when another process competes for the cores: OpenMP threads wait on
    each other (measured: the quick start 25.5 min instead of 2.6 min beside one busy job on 2 cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    threads = max(1, cores - busy)
    return threads, (f"{busy} of {cores} cores busy" if threads < cores else f"{cores} cores")


def set_threads(requested: int | None) -> None:
    """Set torch's thread count once per process: --threads, else LEGO_THREADS, else `default_threads()`."""
    import torch

    env = os.environ.get("LEGO_THREADS")
    if requested is None and env:
        if not env.isdigit() or int(env) < 1:
            raise UserError(f"LEGO_THREADS={env!r}: use a positive whole number")
        requested = int(env)
    if requested is not None and requested < 1:
        raise UserError(f"--threads {requested}: use a positive whole number")
    if requested is None:
        requested, why = default_threads()
        if requested < torch.get_num_threads():
            logging.getLogger("lego_inversion").warning(
                "using %d torch thread(s) (%s); pass --threads N to choose", requested, why)
    torch.set_num_threads(requested)


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
    logging.basicConfig(level=logging.WARNING, format="lego: %(levelname)s: %(message)s")
    try:
        if args.command not in NO_TORCH_COMMANDS:
            set_threads(args.threads)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"lego: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lego: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
