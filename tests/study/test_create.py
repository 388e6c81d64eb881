"""`lego study create`: pairing by concept/subject/seed, assignment of k raters, problems reported, atomicity."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lego_inversion.errors import UserError
from lego_inversion.study.cli import main as lego_main  # same contract as `lego`, without other groups
from lego_inversion.study.create import CreateConfig, create_study
from lego_inversion.study.model import load_study

from .conftest import make_image_set


def _flags(flag: str, values: list[str]) -> list[str]:
    return [x for v in values for x in (flag, v)]


def test_pairs_match_concept_subject_seed(small_study):
    study = small_study
    assert study.methods == ["lego", "ldm"]
    assert len(study.pairs) == 8 and len(study.checks) == 2
    for pair in study.pairs:
        assert (pair.a.method, pair.b.method) == ("lego", "ldm")
        for cand in (pair.a, pair.b):  # the source image really is of this concept/subject/seed
            assert pair.subject in cand.prompt and f"{{{pair.concept}}}" in cand.prompt
        assert pair.a.source.endswith(".png") and "gen_lego" in pair.a.source and "gen_ldm" in pair.b.source
        assert pair.a.image != pair.b.image
    keys = Counter((p.concept, p.subject, p.seed) for p in study.pairs)
    assert set(keys.values()) == {1} and len(keys) == 8
    assert set(study.references) == {"melted", "frozen"} and all(len(v) == 3 for v in study.references.values())
    for check in study.checks:  # the right answer is a reference image of the concept
        right = check.a if check.answer == "a" else check.b
        assert right.image in study.references[check.concept]


def test_each_pair_gets_k_raters_and_checks_go_to_everyone(study_inputs):
    out = study_inputs["root"] / "s5"
    create_study(CreateConfig(out=str(out), sets=study_inputs["sets"], concepts=study_inputs["concepts"],
                              raters_per_pair=3, raters=5, attention_checks=2, seed=1))
    study = load_study(out)
    per_pair = Counter(i for entries in study.order.values() for i, _ in entries if i.startswith("p"))
    assert set(per_pair) == {p.id for p in study.pairs} and set(per_pair.values()) == {3}
    loads = [sum(i.startswith("p") for i, _ in e) for e in study.order.values()]
    assert sum(loads) == 24 and max(loads) - min(loads) <= 1  # balanced: 8 pairs * 3 / 5 raters
    for entries in study.order.values():
        assert {i for i, _ in entries if i.startswith("c")} == {c.id for c in study.checks}
    swaps = [s for entries in study.order.values() for _, s in entries]
    assert 0 < sum(swaps) < len(swaps)  # both left/right orders occur
    assert len(study.rater_tokens) == 5 and len(set(study.rater_tokens.values())) == 5
    assert len({study.admin_token, *study.rater_tokens.values()}) == 6
    again = load_study(create_study(CreateConfig(out=str(out) + "_again", sets=study_inputs["sets"],
                                                 concepts=study_inputs["concepts"], name=study.name))["out"])
    assert again.name == study.name and again.id != study.id  # answers of the two never mix in one database
    assert (out / "secrets.json").stat().st_mode & 0o077 == 0


def test_unmatched_and_missing_subject_are_reported(study_inputs, tmp_path):
    root = study_inputs["root"]
    ldm = make_image_set(tmp_path / "ldm_nosubj", "ldm", ["melted"], ["teddy bear"], [1, 2, 3], salt=9,
                         omit_subject=True)
    sets = [study_inputs["sets"][0], str(ldm)]
    out = root / "s_map"
    # without a subject the ldm records are unusable -> no pairs at all: clear error naming the cause
    with pytest.raises(UserError, match="at least two methods"):
        create_study(CreateConfig(out=str(out), sets=sets, concepts=study_inputs["concepts"], raters_per_pair=1))
    assert not out.exists()
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"0001.png": "teddy bear", "a photo of a teddy bear that is {melted}": "teddy bear"}))
    summary = create_study(CreateConfig(out=str(out), sets=sets, concepts=study_inputs["concepts"],
                                        raters_per_pair=1, mapping=str(mapping)))
    assert summary["pairs"] == 2  # seeds 1, 2 of melted/teddy bear; seed 3 has no lego partner
    text = (out / "problems.txt").read_text()
    assert "seed 3" not in text and ", 3)" in text  # ldm seed 3 listed as unmatched
    assert "frozen" in text  # the lego images of frozen had no ldm partner
    assert len(text.splitlines()) == len(summary["problems"]) == (8 - 2) + (3 - 2)  # unmatched lego + ldm


def test_subject_flag_and_plain_reference_folder(study_inputs, tmp_path):
    ldm = make_image_set(tmp_path / "ldm2", "ldm", ["melted"], ["teddy bear"], [1], salt=5, omit_subject=True)
    lego = make_image_set(tmp_path / "lego2", "lego", ["melted"], ["teddy bear"], [1], salt=6, omit_subject=True)
    refs = study_inputs["root"] / "melted_source" / "with"
    out = tmp_path / "s_plain"
    summary = create_study(CreateConfig(out=str(out), sets=[str(lego), str(ldm)], references=[f"melted={refs}"],
                                        subject="teddy bear", raters_per_pair=2, max_references=2))
    assert summary["pairs"] == 1 and summary["problems"] == []
    assert len(load_study(out).references["melted"]) == 2


def test_bad_inputs_are_one_line_errors(study_inputs, tmp_path, capsys):
    lego_dir = study_inputs["sets"][0].split("=", 1)[1]
    with open(f"{lego_dir}/images.jsonl", "a") as fh:
        fh.write("{not json\n")
    out = tmp_path / "bad"
    code = lego_main(["study", "create", "--out", str(out), *_flags("--set", study_inputs["sets"]),
                      "--concept", study_inputs["concepts"][0]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "images.jsonl:9: not valid JSON" in err
    assert not out.exists() and not list(tmp_path.glob(".bad.*"))
    with open(f"{lego_dir}/images.jsonl") as fh:
        good = [line for line in fh if not line.startswith("{not")]
    with open(f"{lego_dir}/images.jsonl", "w") as fh:
        fh.writelines(good)
    with pytest.raises(UserError, match="raters-per-pair"):
        CreateConfig(out=str(out), sets=["x"], raters_per_pair=0)
    with pytest.raises(UserError, match="has no images"):
        create_study(CreateConfig(out=str(out), sets=study_inputs["sets"], references=[f"melted={tmp_path}"]))
    (tmp_path / "empty_concept" / "with").mkdir(parents=True)
    with pytest.raises(UserError, match="no reference images found"):
        create_study(CreateConfig(out=str(out), sets=study_inputs["sets"], concepts=[str(tmp_path / "empty_concept")]))
    with pytest.raises(UserError, match="use NAME=DIR"):
        create_study(CreateConfig(out=str(out), sets=study_inputs["sets"], references=[str(tmp_path)]))
    # only melted has references: frozen's pairs are left out and reported, melted's are kept
    summary = create_study(CreateConfig(out=str(out), sets=study_inputs["sets"],
                                        concepts=study_inputs["concepts"][:1], raters_per_pair=1))
    assert summary["pairs"] == 4
    assert sum("no reference images for concept(s) ['frozen']" in p for p in summary["problems"]) == 4


def test_refuses_non_empty_out_and_cli_create(study_inputs, tmp_path, capsys):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        create_study(CreateConfig(out=str(out), sets=study_inputs["sets"], concepts=study_inputs["concepts"]))
    assert (out / "keep.txt").read_text() == "x"
    out2 = tmp_path / "cli_study"
    code = lego_main(["study", "create", "--out", str(out2), *_flags("--set", study_inputs["sets"]),
                      *_flags("--concept", study_inputs["concepts"]), "--raters-per-pair", "2"])
    assert code == 0 and "8 pairs (lego vs ldm)" in capsys.readouterr().out
    assert len(load_study(out2).order) == 2


def test_image_sets_are_read_as_image_records(study_inputs, tmp_path):
    """The image facts come from manifest.ImageRecord; what a record lacks is filled from the flags."""
    from lego_inversion.manifest import ImageRecord
    from lego_inversion.study.create import read_image_sets

    bare = make_image_set(tmp_path / "bare", None, ["melted"], ["cube"], [4, 5], salt=3, omit_subject=True)
    problems: list[str] = []
    cfg = CreateConfig(out=str(tmp_path / "unused"), sets=[f"ldm={bare}", study_inputs["sets"][0]], subject="cube")
    images = read_image_sets(cfg, problems)
    assert problems == [] and all(isinstance(im.record, ImageRecord) for im in images)
    first = images[0]
    assert (first.record.method, first.record.subject, first.record.concepts, first.record.seed) == (
        "ldm", "cube", ("melted",), 4)  # method from --set, subject from --subject, the rest from the record
    assert first.image_set == bare and first.record.path == bare / "0001.png"
    assert first.record.prompt == "a photo of a cube that is {melted}" and first.key == ("ldm", "melted", "cube", 4)
    lego = [im for im in images if im.record.method == "lego"]
    assert len(lego) == 8 and {im.record.subject for im in lego} == {"teddy bear", "cube"}  # the record's own


def test_records_without_concepts_take_the_single_concept(study_inputs, tmp_path):
    """A plain-prompt set made without `lego generate --about` records no concepts: with exactly one concept
    given it is about that one; with several it cannot be placed and is reported."""
    plain = make_image_set(tmp_path / "plain", "ldm", ["melted"], ["cube"], [1, 2], salt=8, about=())
    lego = make_image_set(tmp_path / "lego1", "lego", ["melted"], ["cube"], [1, 2], salt=9)
    sets = [str(lego), str(plain)]
    summary = create_study(CreateConfig(out=str(tmp_path / "one"), sets=sets, concepts=study_inputs["concepts"][:1],
                                        raters_per_pair=1))
    assert summary["pairs"] == 2 and summary["problems"] == []
    assert {p.concept for p in load_study(tmp_path / "one").pairs} == {"melted"}
    with pytest.raises(UserError, match="at least two methods") as info:
        create_study(CreateConfig(out=str(tmp_path / "two"), sets=sets, concepts=study_inputs["concepts"],
                                  raters_per_pair=1))
    assert "no concepts" in str(info.value) and "--about" in str(info.value)
    assert not (tmp_path / "two").exists()


def test_study_folder_is_built_aside_and_swapped_in_whole(study_inputs, tmp_path, monkeypatch):
    """create uses atomic.atomic_dir: a failure at the last step leaves neither the folder nor a temporary one;
    an existing empty --out folder is replaced by the complete study."""
    from lego_inversion.study import create as create_mod

    used = []
    real_atomic_dir = create_mod.atomic_dir

    def spy(path, *a, **kw):
        used.append(Path(path))
        return real_atomic_dir(path, *a, **kw)

    monkeypatch.setattr(create_mod, "atomic_dir", spy)
    parent = tmp_path / "studies"
    parent.mkdir()

    def crash(root):
        assert (Path(root) / "study.json").is_file() and Path(root) != parent / "s"  # written, not yet in place
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(create_mod, "load_study", crash)
        with pytest.raises(OSError, match="disk full"):
            create_study(CreateConfig(out=str(parent / "s"), sets=study_inputs["sets"],
                                      concepts=study_inputs["concepts"], raters_per_pair=1))
    assert list(parent.iterdir()) == [] and used == [parent / "s"]
    (parent / "s").mkdir()
    create_study(CreateConfig(out=str(parent / "s"), sets=study_inputs["sets"], concepts=study_inputs["concepts"],
                              raters_per_pair=1))
    assert len(load_study(parent / "s").pairs) == 8 and [p.name for p in parent.iterdir()] == ["s"]
