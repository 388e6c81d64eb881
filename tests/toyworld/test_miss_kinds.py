"""benchmarks/miss_kinds.py: each image's reading sorted into one kind, tallied per split and concept by hand."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "miss_kinds.py"
sys.path.insert(0, str(_PATH.parent))
_spec = importlib.util.spec_from_file_location("miss_kinds", _PATH)
kinds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kinds)


def _pred(concept="melted", variant=1, count=1):
    return {"subject": "ball", "appearance": "red", "concept": concept, "variant": variant, "count": count}


def _cell(folder: Path, concept: str, seed: int, preds: list[dict]) -> None:
    (folder / "cells").mkdir(parents=True, exist_ok=True)
    (folder / "cells" / f"{concept}-lego-{seed}.json").write_text(json.dumps(
        {"concept": concept, "method": "lego", "seed": seed, "predictions": preds}))


def test_each_reading_is_one_kind():
    melted = {"concept": "melted", "variant": 1, "count": 1}
    three = {"concept": "count", "variant": 1, "count": 3}
    assert kinds.kind(_pred(), melted) == "look"
    assert kinds.kind(_pred(variant=0), melted) == "generic variant"
    assert kinds.kind(_pred("crumpled"), melted) == "another concept"
    assert kinds.kind(_pred("none", 0), melted) == "no concept"
    assert kinds.kind(_pred("count", 1, 3), three) == "look"
    assert kinds.kind(_pred("count", 1, 2), three) == "pile, another number"
    assert kinds.kind(_pred("count", 0, 3), three) == "generic variant"


def test_tally_by_split_and_concept_and_the_cli(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    # examples/melted_cube (melted, variant 1): seed 0 in a is replaced by seed 0 in b; seed 1 only in a
    _cell(a, "melted_cube", 0, [_pred("none", 0)] * 4)
    _cell(b, "melted_cube", 0, [_pred(), _pred("crumpled"), _pred("crumpled", 0), _pred(variant=0)])
    _cell(a, "melted_cube", 1, [_pred(), _pred("none", 0)])
    # benchmarks/dev/two_hearts_checkered: a pile of 2
    _cell(a, "two_hearts_checkered", 0, [_pred("count", 1, 2), _pred("count", 1, 3), _pred("sleeping")])
    out = tmp_path / "shares.json"
    assert kinds.main([str(a), str(b), "--json", str(out)]) == 0
    shares = json.loads(out.read_text())
    # melted_cube: 6 images = look 2, crumpled 2, none 1, generic 1
    assert shares["examples"]["melted_cube"] == {"look": 2 / 6, "another concept": 2 / 6, "no concept": 1 / 6,
                                                 "generic variant": 1 / 6, "other:crumpled": 2 / 6}
    assert shares["dev"]["two_hearts_checkered"] == {"look": 1 / 3, "pile, another number": 1 / 3,
                                                     "another concept": 1 / 3, "other:sleeping": 1 / 3}
    table = capsys.readouterr().out
    assert "| **examples** | 6 | 0.33 | 0.33 | 0.17 | 0.00 | 0.17 | crumpled 0.33 |" in table
    assert "| two_hearts_checkered | 3 | 0.33 | 0.33 | 0.00 | 0.33 | 0.00 | sleeping 0.33 |" in table


def test_folders_without_cells_are_a_one_line_error(tmp_path, capsys):
    assert kinds.main([str(tmp_path / "nothere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothere" in err and not (tmp_path / "nothere").exists()
