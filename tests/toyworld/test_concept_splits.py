"""The toy-world concept splits outside examples/ (benchmarks/heldout/, benchmarks/dev/): deterministic, and
different from examples/ and from each other in every way the defaults could have been tuned to."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lego_inversion.toyworld.examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("concept_splits", ROOT / "benchmarks" / "concept_splits.py")
splits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(splits)


@pytest.mark.parametrize("split", ["heldout", "dev"])
def test_committed_folders_are_what_the_generator_builds(tmp_path, split):
    made = splits.make_split(split, tmp_path)
    assert [p.name for p in made] == [ex.name for ex in splits.SPLITS[split]]
    committed_root = ROOT / "benchmarks" / split
    assert sorted(p.name for p in committed_root.iterdir()) == sorted(p.name for p in made)
    for folder in made:
        files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        committed = committed_root / folder.name
        assert files == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
        for f in files:
            assert (folder / f).read_bytes() == (committed / f).read_bytes(), f


@pytest.mark.parametrize("split", ["heldout", "dev"])
def test_split_differs_from_every_other(split):
    others = [EXAMPLES, *(v for k, v in splits.SPLITS.items() if k != split)]
    pairs = {(ex.subject, ex.concept) for group in others for ex in group}
    seeds = {s for group in others for ex in group for s in ex.seeds}
    counts = {ex.count for group in others for ex in group if ex.concept == "count"}
    for ex in splits.SPLITS[split]:
        assert (ex.subject, ex.concept) not in pairs, ex.name  # another subject for every concept
        assert not set(ex.seeds) & seeds, ex.name
        assert ex.concept != "count" or ex.count not in counts, ex.name
    appearances = {ex.appearance for ex in splits.SPLITS[split]}
    assert "checkered" in appearances and len(appearances - {"checkered"}) >= 3  # plain colours too
    assert {ex.concept for ex in splits.SPLITS[split]} == {ex.concept for ex in EXAMPLES}


def test_cli_builds_one_split_where_asked(tmp_path, capsys):
    assert splits.main(["--split", "dev", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ex.name for ex in splits.DEV)
    with pytest.raises(SystemExit) as err:
        splits.main(["--out", str(tmp_path)])  # two splits into one folder
    assert err.value.code == 2
