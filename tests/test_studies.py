"""The toy-world studies (benchmarks/study_*.py, docs/studies.md): derived concept folders, random words,
resumable cells, bad input, and one tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lego_inversion.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"test_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = importlib.import_module("study_common")  # the module the study scripts import
refs = _load("study_references")
words = _load("study_words")
subject = _load("study_subject")


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("n_with,n_without", [(1, 2), (4, 3)])
def test_derived_folder_has_exactly_n_images_of_the_right_scenes(tmp_path, n_with, n_without):
    from lego_inversion.toyworld.examples import scenes
    from lego_inversion.toyworld.render import render

    folder = ROOT / "examples" / "melted_cube"
    out = common.derive_concept(folder, tmp_path / "d", n_with, n_without)
    assert sorted(p.name for p in (out / "with").iterdir()) == [f"{i}.png" for i in range(n_with)]
    assert sorted(p.name for p in (out / "without").iterdir()) == [f"{i}.png" for i in range(n_without)]
    ex = common.example_of(folder)
    assert common.exemplar_seeds(ex.seeds, 4) == (*ex.seeds, 500, 501)
    with_ = scenes(type(ex)(**{**ex.__dict__, "seeds": common.exemplar_seeds(ex.seeds, n_with)}))[0]
    for i, scene in enumerate(with_):
        assert scene.concept == "melted" and scene.subject == "cube" and scene.appearance == "checkered"
        assert np.array_equal(_pixels(out / "with" / f"{i}.png"), np.asarray(render(scene).convert("RGB")))
    # the first images are the example's own: the same seeds reproduce its files exactly
    assert np.array_equal(_pixels(out / "with" / "0.png"), _pixels(folder / "with" / "0.png"))
    assert np.array_equal(_pixels(out / "without" / "0.png"), _pixels(folder / "without" / "0.png"))
    assert (out / "concept.toml").read_text() == (folder / "concept.toml").read_text()
    if n_with > 2:  # the extra exemplars are new images, not copies
        assert not np.array_equal(_pixels(out / "with" / "2.png"), _pixels(out / "with" / "0.png"))


def test_derive_is_deterministic_and_reused(tmp_path):
    folder = ROOT / "examples" / "crumpled_pyramid"
    a = common.derive_concept(folder, tmp_path / "a", 3, 1)
    mtime = (a / "with" / "2.png").stat().st_mtime_ns
    assert common.derive_concept(folder, tmp_path / "a", 3, 1) == a
    assert (a / "with" / "2.png").stat().st_mtime_ns == mtime  # same content: left alone
    b = common.derive_concept(folder, tmp_path / "b", 3, 1)
    assert np.array_equal(_pixels(a / "with" / "2.png"), _pixels(b / "with" / "2.png"))


def test_split_concepts_are_known():
    if not (ROOT / "benchmarks" / "concept_splits.py").is_file():
        pytest.skip("no concept splits")
    [folder] = common.resolve_concepts(["melted_star_red"])
    assert common.example_of(folder).appearance == "red"
    [folder] = common.resolve_concepts(["melted_bear_green"])
    assert common.example_of(folder).appearance == "green"


def test_bad_input_is_one_line_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="no concept folder"):
        common.resolve_concepts(["no_such_concept"])
    with pytest.raises(UserError, match="not a toy-world example"):
        common.example_of(tmp_path / "mine")
    with pytest.raises(UserError, match=">= 1"):
        refs.conditions([0, 2], [2])
    with pytest.raises(UserError, match="at least one"):
        common.derive_concept(ROOT / "examples" / "melted_cube", tmp_path / "x", 0, 2)
    rc = refs.main_wrapper("references", refs.main, ["--out", str(tmp_path / "o"), "--concepts", "nope"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("study_references: error:")


def test_reference_conditions_vary_one_set_at_a_time():
    assert refs.conditions([1, 8], [4]) == [("with:1", 1, 2), ("with:8", 8, 2), ("without:4", 2, 4)]


@pytest.fixture(scope="module")
def toy():
    from lego_inversion.backbones import load_backbone

    return load_backbone(None)


def test_random_words_are_seeded_distinct_and_embeddable(toy):
    vocab = words.vocabulary_words(toy.slots[0].tokenizer)
    assert len(vocab) > 1000 and all(w.isalpha() and w.islower() and len(w) >= 3 for w in vocab)
    a = words.random_words(vocab, 6, seed=0, salt="melted_cube<melted>", exclude=("melted", "molten"))
    assert a == words.random_words(vocab, 6, seed=0, salt="melted_cube<melted>", exclude=("melted", "molten"))
    assert a != words.random_words(vocab, 6, seed=1, salt="melted_cube<melted>")
    assert a != words.random_words(vocab, 6, seed=0, salt="frozen_bear<ice>")
    # the whole salt counts, not a prefix (two concepts whose names share 16 letters draw different words)
    assert words.random_words(vocab, 6, 0, "crumpled_pyramid<crumpled>") != words.random_words(
        vocab, 6, 0, "crumpled_pyramid_checkered<crumpled>")
    assert len(set(a)) == 6 and not {"melted", "molten"} & set(a)
    words.embeddable(a, toy)  # raises if any word maps to no known token
    with pytest.raises(UserError, match="cannot embed"):
        words.embeddable(["\u2603\u2603"], toy)


def test_word_conditions_change_only_the_words(toy):
    ex = common.example_of(ROOT / "examples" / "melted_cube")
    hand = words.words_for(ex, "hand", toy, 0)
    assert hand == ex.tokens
    wn = words.words_for(ex, "wordnet", toy, 0)[0]
    assert wn.token == "<melted>" and wn.init == "melted"
    assert len(wn.positives) == 3 and "molten" in wn.positives and "frozen" in wn.negatives
    rnd = words.words_for(ex, "random", toy, 0)[0]
    assert (len(rnd.positives), len(rnd.negatives)) == (3, 3)
    assert rnd == words.words_for(ex, "random", toy, 0)[0] != words.words_for(ex, "random", toy, 1)[0]


def test_subject_reading_by_hand():
    truth = {"subject": "cube", "appearance": "checkered"}
    pred = {"subject": "cube", "appearance": "red", "concept": "none"}
    assert subject.read_subject(pred, truth) == {"subject": 1.0, "appearance": 0.0, "exemplar": 0.0,
                                                 "no_concept": 1.0}
    pred = {"subject": "cube", "appearance": "checkered", "concept": "melted"}
    assert subject.read_subject(pred, truth) == {"subject": 1.0, "appearance": 1.0, "exemplar": 1.0,
                                                 "no_concept": 0.0}
    assert subject.prompts_for("init", "cube", 2) == ["a photo of a cube"] * 2


def _study(tmp_path, **kw):
    args = SimpleNamespace(**({"out": str(tmp_path), "concepts": ["melted_cube"], "seeds": [0], "steps": 2,
                               "images": 1, "targets": ["ball"], "sample_steps": 2, "threads": 1} | kw))
    return common.Study("unit", args)


def test_resume_skips_finished_cells_and_reports_intervals(tmp_path):
    study = _study(tmp_path)
    calls = []

    def compute(cell):
        calls.append(cell["condition"])
        return {"success": 1.0 if cell["condition"] == "a" else 0.0, "leakage": 0.5, "fidelity": 1.0,
                "clean": 0.0}

    jobs = [(f"k-{c}-0", {"concept": "k", "condition": c, "seed": 0}) for c in ("a", "b")]
    cells = study.run_cells(jobs, compute)
    assert calls == ["a", "b"] and json.loads((study.dir / "cells" / "k-a-0.json").read_text())["success"] == 1.0
    again = study.run_cells(jobs + [("k-c-0", {"concept": "k", "condition": "c", "seed": 0})], compute)
    assert calls == ["a", "b", "c"] and again[:2] == cells  # finished cells are read back, not recomputed
    table = study.report(again, ["a", "b", "c"], title="t")
    assert "| a | 1.00 [1.00, 1.00] | 0.50 [0.50, 0.50]" in table
    assert (study.dir / "plot.png").is_file() and (study.dir / "results.json").is_file()


def test_bad_sizes_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="must be >= 1"):
        _study(tmp_path, steps=0)


def test_set_pins_settings_for_every_run(tmp_path):
    """--set overrides the model's defaults in every run's config (a study can be rerun at earlier defaults)."""
    study = _study(tmp_path, set=["timestep_min=0", "learning_rate=0.02"])
    cfg = study.config(context_weight=0.0)
    assert (cfg.timestep_min, cfg.learning_rate, cfg.context_weight, cfg.steps) == (0.0, 0.02, 0.0, 2)
    assert _study(tmp_path).config().timestep_min is None  # unset: the model's value, resolved by the trainer
    with pytest.raises(UserError, match="--set"):
        _study(tmp_path, set=["seed=3"])


def test_subject_study_end_to_end_and_resume(tmp_path, monkeypatch):
    """Two inversion steps, two sampler steps, one image per prompt: trains the run, scores 3 cells; a rerun
    trains and generates nothing."""
    argv = ["--out", str(tmp_path), "--concepts", "melted_cube", "--steps", "2", "--sample-steps", "2",
            "--subject-images", "1"]
    assert subject.main(argv) == 0
    cells = sorted(p.name for p in (tmp_path / "subject" / "cells").iterdir())
    assert cells == ["melted_cube-concept-0.json", "melted_cube-init-0.json", "melted_cube-subj-0.json"]
    assert (tmp_path / "runs" / "melted_cube-lego-s0" / "learned_embeds.safetensors").is_file()
    cell = json.loads((tmp_path / "subject" / "cells" / "melted_cube-subj-0.json").read_text())
    assert cell["prompts"] == ["a photo of a {subject}"] and cell["n_images"] == 1

    def boom(*a, **k):
        raise AssertionError("a finished study must not train or generate again")

    monkeypatch.setattr(subject.Study, "train", boom)
    monkeypatch.setattr(subject.Study, "generate_and_score", boom)
    assert subject.main(argv) == 0
    md = (tmp_path / "subject" / "results.md").read_text()
    assert md.count("\n| subj | ") == 2 and "--subject-images 1" in md  # the means table and the paired one
    assert "Paired difference from `init`" in md


def test_paired_differences_and_splits_by_hand():
    cells = [{"concept": k, "seed": 0, "condition": c, "success": v, "leakage": 0.0, "fidelity": 1.0, "clean": v}
             for k, c, v in [("melted_cube", "hand", 0.5), ("melted_cube", "x", 1.0),
                             ("crumpled_pyramid", "hand", 0.25), ("crumpled_pyramid", "x", 0.25),
                             ("melted_star_red", "x", 1.0)]]  # no baseline cell: not paired
    summary, rows = common.paired_rows(cells, ["hand", "x"], "hand", common.METRICS, common.LABELS)
    assert summary["x"]["pairs"] == 2 and summary["x"]["success"][0] == pytest.approx(0.25)
    assert summary["x"]["success"][1:] == pytest.approx((0.0, 0.5))  # bootstrap over {0.5, 0.0}
    assert "hand" not in summary and rows[2].startswith("| x | +0.25 [+0.00, +0.50]")
    assert common.split_of("melted_cube") == "examples" and common.split_of("melted_star_red") == "held-out"
    assert common.split_of("two_hearts_checkered") == "dev"
