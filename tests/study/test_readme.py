"""The README's "Human preference study" commands, run as written (from a scratch folder) on fake image sets.

`lego generate` is not run (it needs the model and minutes of CPU): each documented generate line is parsed by
the real `lego generate` parser and its folder written the way generate writes it (one PNG per prompt and seed,
images.jsonl through manifest.write_manifest). `runs/melted` is faked from the quick start's `lego invert` line:
a concept.json with the concept's real name and reference images (concept.load_concept on examples/). Every
`lego study` line runs through the real CLI, except `serve`, whose arguments are only parsed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

from PIL import Image

from lego_inversion import commands
from lego_inversion.concept import load_concept
from lego_inversion.manifest import ImageRecord, write_manifest
from lego_inversion.study import cli as study_cli
from lego_inversion.study.model import load_study
from lego_inversion.study.storage import open_storage

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _bash_commands(text: str) -> list[list[str]]:
    """The commands of the ```bash blocks: continuation lines joined, comments dropped, split like a shell."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            words = shlex.split(cmd, comments=True)
            if words:
                lines.append(words)
    return lines


def _lego_parser() -> argparse.ArgumentParser:
    """`lego` with the command groups the study section uses (invert/generate/export and study)."""
    parser = argparse.ArgumentParser(prog="lego")
    sub = parser.add_subparsers(dest="command")
    commands.register(sub)
    study_cli.register(sub)
    return parser


def _fake_invert(args) -> None:
    """One concept folder, one method, one seed: --out is the run folder and holds concept.json."""
    folders = args.concept_dir if isinstance(args.concept_dir, list) else [args.concept_dir]
    assert len(folders) == 1
    spec = load_concept(REPO / folders[0])
    args.out.mkdir(parents=True)
    (args.out / "concept.json").write_text(json.dumps({
        "name": spec.name, "method": "lego", "root": str(spec.root),
        "reference_images": spec.to_json()["reference_images"]}))


def _fake_generate(args, salt: int) -> None:
    """What `lego generate` records: the loaded concepts (else --about), --subject, seed + k per prompt."""
    runs = [json.loads((Path(c) / "concept.json").read_text()) for c in args.concept]
    concepts = tuple(r["name"] for r in runs) or tuple(args.about)
    method = runs[0]["method"] if runs else "text"
    records = []
    for prompt in args.prompt:
        for k in range(args.num_images):
            path = args.out / f"{len(records):04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (salt, len(records), 7)).save(path)
            records.append(ImageRecord(path=path, prompt=prompt, seed=args.seed + k, subject=args.subject,
                                       method=method, concepts=concepts, expanded_prompt=prompt, model="toy"))
    write_manifest(args.out, records)


def _answer_everything(study_dir: str) -> int:
    """Every rater prefers the method under test and passes every attention check; returns the pair count."""
    study = load_study(study_dir)
    store = open_storage(str(Path(study_dir) / "answers.sqlite"), study.id)
    for rater, entries in study.order.items():
        for item_id, _ in entries:
            item = study.items[item_id]
            slot = item.answer or "a"
            side = "left" if study.choice_to_slot(rater, item_id, "left") == slot else "right"
            assert store.submit(rater, item_id, slot, side)
    store.close()
    return len(study.pairs)


def test_readme_study_section_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    parser = _lego_parser()
    invert = [c for c in _bash_commands(_section("Set up, run, test")) if c[:2] == ["lego", "invert"]]
    assert invert, "the quick start's `lego invert` line makes runs/melted"
    study_section = _section('Human preference study (§5.3, Table 2 "Human")')
    assert "runs/melted" in study_section and "the quick start" in study_section
    _fake_invert(parser.parse_args(invert[0][1:invert[0].index("&&")] if "&&" in invert[0] else invert[0][1:]))
    ran = []
    for n, words in enumerate(_bash_commands(study_section)):
        assert words[0] == "lego", words
        args = parser.parse_args(words[1:])  # every documented flag exists
        if args.command == "generate":
            _fake_generate(args, salt=40 * n)
        elif args.study_command == "serve":
            assert args.host == "127.0.0.1"  # documented as loopback
        else:
            if args.study_command == "results":
                pairs = _answer_everything(args.study)
            capsys.readouterr()
            assert study_cli.main(words[1:]) == 0, (words, capsys.readouterr().err)
            out = capsys.readouterr()
            assert "Traceback" not in out.err
            if args.study_command == "create":
                assert "20 pairs (lego vs ldm), 3 attention checks, 10 raters" in out.out
                assert (tmp_path / args.out / "problems.txt").read_text() == ""  # every image was paired
            if args.study_command == "links":
                assert len(out.out.splitlines()) == 11  # 10 raters + admin
        ran.append(args.study_command if args.command == "study" else args.command)
    assert ran == ["generate", "generate", "create", "links", "serve", "serve", "results"]
    report = json.loads((tmp_path / "studies/melted/results/results.json").read_text())
    overall = report["comparisons"][0]["overall"]
    assert (overall["pairs"], overall["wins_a"], overall["wins_b"]) == (pairs, pairs, 0) and pairs == 20
    assert report["attention"]["dropped"] == []
