"""The held-out concept split (benchmarks/heldout/): deterministic, and different from examples/ in every way
the defaults could have been tuned to."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lego_inversion.toyworld.examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("heldout_concepts", ROOT / "benchmarks" / "heldout_concepts.py")
heldout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(heldout)


def test_committed_heldout_folders_are_what_the_generator_builds(tmp_path):
    made = heldout.make_heldout(tmp_path)
    assert [p.name for p in made] == [ex.name for ex in heldout.HELDOUT]
    for folder in made:
        files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        committed = ROOT / "benchmarks" / "heldout" / folder.name
        assert files == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
        for f in files:
            assert (folder / f).read_bytes() == (committed / f).read_bytes(), f


def test_heldout_differs_from_the_tuning_examples():
    tuned = {(ex.subject, ex.concept) for ex in EXAMPLES}
    seeds = {s for ex in EXAMPLES for s in ex.seeds}
    for ex in heldout.HELDOUT:
        assert (ex.subject, ex.concept) not in tuned, ex.name  # another subject for every concept
        assert not set(ex.seeds) & seeds, ex.name
    appearances = {ex.appearance for ex in heldout.HELDOUT}
    assert "checkered" in appearances and len(appearances - {"checkered"}) >= 3  # plain colours too
    assert {ex.concept for ex in heldout.HELDOUT} == {ex.concept for ex in EXAMPLES}
