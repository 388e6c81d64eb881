"""`lego study ...`: the human preference study of Lego §5.3 (Table 2 "Human") as a command group.

    lego study create --out studies/melted --set lego=gen/lego --set ldm=gen/ldm --concept runs/melted \\
        --raters-per-pair 10 --attention-checks 3
    lego study links studies/melted --base-url http://127.0.0.1:8000     # one link per rater + admin link
    lego study serve studies/melted                      # SQLite (WAL) in the study folder, 127.0.0.1:8000
    lego study serve studies/melted --db postgresql://lego@127.0.0.1/lego   # many raters / several processes
    lego study results studies/melted --out studies/melted/results --drop-failing-raters
    lego study mturk-export studies/melted --base-url https://host/images/ --out batch_input.csv
    lego study results studies/melted --mturk Batch_1_batch_results.csv

Output piped into a reader that stops early (`lego study links STUDY | head`) ends quietly with exit code 141,
as for a process killed by SIGPIPE, instead of a BrokenPipeError traceback.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import logging
import os
import sys
from pathlib import Path

from ..errors import UserError

DB_ENV = "LEGO_STUDY_DB"
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE


def _pipe_safe(command):
    """Run `command(args)` and flush stdout; if the reader has gone away, point stdout at /dev/null (so the
    interpreter's final flush cannot fail either) and exit quietly with EXIT_BROKEN_PIPE."""

    @functools.wraps(command)
    def run(args) -> int:
        try:
            code = command(args)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_BROKEN_PIPE

    return run


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="human preference study: create, serve, results (Lego §5.3)",
                              description="Pairwise human preference study between image sets (Lego §5.3).")
    sub = p.add_subparsers(dest="study_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    c = sub.add_parser("create", help="build a study folder from `lego generate` image sets")
    c.add_argument("--out", required=True, help="new study folder")
    c.add_argument("--set", dest="sets", action="append", required=True, metavar="[METHOD=]DIR",
                   help="an image set (folder with images.jsonl); the first set's method is the one under test")
    c.add_argument("--concept", dest="concepts", action="append", default=[], metavar="[NAME=]DIR",
                   help="`lego invert` output (concept.json) or concept folder (with/, without/) for references")
    c.add_argument("--references", action="append", default=[], metavar="NAME=DIR",
                   help="plain folder of reference images for concept NAME")
    c.add_argument("--subject", help="target subject for records without one")
    c.add_argument("--mapping", help="JSON {file | set/file | prompt: subject or {subject, method}}")
    c.add_argument("--target", help="method under test (default: the first set's)")
    c.add_argument("--raters-per-pair", type=int, default=10, help="k raters answer each pair (default 10)")
    c.add_argument("--raters", type=int, help="number of rater links (default: raters per pair)")
    c.add_argument("--attention-checks", type=int, default=0, help="attention checks per concept (default 0)")
    c.add_argument("--max-references", type=int, default=4, help="reference images shown per pair")
    c.add_argument("--question", help="question shown to raters")
    c.add_argument("--name", help="study name (default: the folder name)")
    c.add_argument("--seed", type=int, default=0, help="seed for assignment and left/right order")
    c.set_defaults(func=_pipe_safe(cmd_create))

    s = sub.add_parser("serve", help="run the rating web app")
    s.add_argument("study", help="study folder")
    s.add_argument("--db", help=f"SQLite path or postgresql:// URL (default: env {DB_ENV}, else "
                   "STUDY/answers.sqlite)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(func=_pipe_safe(cmd_serve))

    k = sub.add_parser("links", help="print each rater's link and the admin link")
    k.add_argument("study")
    k.add_argument("--base-url", default="http://127.0.0.1:8000")
    k.set_defaults(func=_pipe_safe(cmd_links))

    r = sub.add_parser("results", help="majority votes, win rates, CIs, sign test, Fleiss' kappa")
    r.add_argument("study")
    r.add_argument("--db", help=f"answer storage (default: env {DB_ENV}, else STUDY/answers.sqlite)")
    r.add_argument("--mturk", action="append", default=[], metavar="CSV",
                   help="analyse MTurk batch-results CSV(s) instead of the app's answers")
    r.add_argument("--drop-failing-raters", action="store_true", help="drop raters who fail attention checks")
    r.add_argument("--max-failure-rate", type=float, default=0.0,
                   help="with --drop-failing-raters: drop raters whose failure rate is above this (default 0)")
    r.add_argument("--confidence", type=float, default=0.95, help="Wilson interval level (default 0.95)")
    r.add_argument("--format", choices=["md", "csv", "json"], default="md", help="what to print (default md)")
    r.add_argument("--out", help="folder for results.md/.json, summary.csv, pairs.csv, win_rates.png")
    r.set_defaults(func=_pipe_safe(cmd_results))

    m = sub.add_parser("mturk-export", help="write an MTurk batch-input CSV (+ HIT layout)")
    m.add_argument("study")
    m.add_argument("--base-url", required=True, help="public URL where the study's images/ folder is hosted")
    m.add_argument("--out", required=True, help="batch-input CSV to write")
    m.add_argument("--template", help="also write an HTML HIT layout here")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=_pipe_safe(cmd_mturk_export))


def _db_url(args, study_root: Path) -> str:
    return args.db or os.environ.get(DB_ENV) or str(study_root / "answers.sqlite")


def cmd_create(args) -> int:
    from .create import CreateConfig, create_study
    from .model import DEFAULT_QUESTION

    cfg = CreateConfig(out=args.out, sets=args.sets, concepts=args.concepts, references=args.references,
                       subject=args.subject, mapping=args.mapping, target=args.target,
                       raters_per_pair=args.raters_per_pair, raters=args.raters,
                       attention_checks=args.attention_checks, max_references=args.max_references,
                       question=args.question or DEFAULT_QUESTION, name=args.name, seed=args.seed)
    summary = create_study(cfg)
    print(f"study written to {summary['out']}: {summary['pairs']} pairs ({' vs '.join(summary['methods'])}), "
          f"{summary['checks']} attention checks, {summary['raters']} raters")
    if summary["problems"]:
        print(f"{len(summary['problems'])} image records were not used (all listed in "
              f"{Path(summary['out']) / 'problems.txt'}), e.g.:", file=sys.stderr)
        for line in summary["problems"][:5]:
            print(f"  {line}", file=sys.stderr)
    print(f"next: lego study links {summary['out']}   and   lego study serve {summary['out']}")
    return 0


def cmd_links(args) -> int:
    from .model import load_study

    study = load_study(args.study)
    base = args.base_url.rstrip("/")
    for rater, token in study.rater_tokens.items():
        print(f"{rater}\t{base}/r/{token}")
    print(f"admin\t{base}/admin?token={study.admin_token}")
    return 0


def cmd_serve(args) -> int:
    from .model import load_study

    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise UserError(f"`lego study serve` needs the study extra ({exc.name} is missing): "
                        "pip install 'lego-inversion[study]'") from None
    from .storage import open_storage

    study = load_study(args.study)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1..65535, got {args.port}")
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"lego: warning: binding to {args.host}: the study is reachable from other machines", file=sys.stderr)
    storage = open_storage(_db_url(args, study.root), study.id)
    _log_to_stderr()
    print(f"serving {study.name!r}: {len(study.pairs)} pairs, {len(study.order)} raters, "
          f"{storage.count()} answers so far; admin: http://{args.host}:{args.port}/admin?token=... "
          f"(token in {study.root / 'secrets.json'})", flush=True)
    try:
        uvicorn.run(create_app(study, storage), host=args.host, port=args.port, log_level="warning")
    finally:
        storage.close()
    return 0


def _log_to_stderr() -> None:
    """The app's own log lines (e.g. "answered 503: ...") as one timestamped line each on stderr."""
    logger = logging.getLogger("lego_inversion.study")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s lego study %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def cmd_results(args) -> int:
    from .model import load_study
    from .results import AnalysisConfig, analyze, render, write_outputs

    cfg = AnalysisConfig(drop_failing=args.drop_failing_raters, max_failure_rate=args.max_failure_rate,
                         confidence=args.confidence)
    study = load_study(args.study, with_secrets=False)
    if args.mturk:
        from .mturk import import_batch

        answers = []
        for path in args.mturk:
            got, counts = import_batch(study, Path(path))
            answers += got
            print(f"{path}: {len(got)} answers imported ({counts['rejected']} rejected, "
                  f"{counts['duplicates']} duplicate rows skipped)", file=sys.stderr)
    else:
        from .storage import open_storage

        url = _db_url(args, study.root)
        if "://" not in url and not Path(url).is_file():
            raise UserError(f"{url}: no answers yet; run `lego study serve {args.study}` or pass --db / --mturk")
        storage = open_storage(url, study.id)
        answers = storage.answers()
        storage.close()
    if not answers:
        raise UserError(f"no answers stored for study {study.name!r} yet; nothing to analyse")
    report = analyze(study, answers, cfg)
    sys.stdout.write(render(report, args.format))
    if args.out:
        written = write_outputs(report, Path(args.out))
        print(f"wrote {', '.join(p.name for p in written)} to {args.out}", file=sys.stderr)
    return 0


def cmd_mturk_export(args) -> int:
    from .model import load_study
    from .mturk import export_batch

    study = load_study(args.study, with_secrets=False)
    n = export_batch(study, args.base_url, Path(args.out), Path(args.template) if args.template else None,
                     seed=args.seed)
    print(f"wrote {n} rows to {args.out}; set MaxAssignments to {study.raters_per_pair} (raters per pair)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m lego_inversion.study.cli study ...`: the `lego study` group alone, without importing the other
    command groups (and their heavier dependencies); the test servers start this way."""
    parser = argparse.ArgumentParser(prog="lego")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"lego: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
