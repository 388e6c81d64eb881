"""`select_guidance`: a look-selected run judges its kept rows at each concept guidance ratio on fresh noise, records
the best (ties: the lower ratio), and generation guides the concept at it by default (selection.choose_guidance,
generation.ConceptGenerator.chosen_concept_guidance)."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from lego_inversion import judges
from lego_inversion.averaging import average_runs
from lego_inversion.config import InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.formats import load_learned
from lego_inversion.generation import ConceptGenerator, load_generator
from lego_inversion.selection import GUIDANCE_NOISE, LOOK_SEED, best_ratio
from lego_inversion.trainer import invert
from test_look_selection import LOOK


class RecordingJudge:
    """Scores each call with the next value of `script` and keeps the images it was shown."""

    def __init__(self, script):
        self.script, self.images = list(script), []

    def __call__(self, images, subjects):
        self.images.append(list(images))
        return [self.script.pop(0)] * len(images)


def _pixels(images):
    return [np.asarray(im, dtype=np.int16) for im in images]


@pytest.fixture
def chosen(tiny_sd, concept_dir, tmp_path, monkeypatch):
    """A run that selects by look every 2 of 6 steps (4 scorings), then judges ratios 1, 1.5, 2 (scores .25 .5 .5)."""
    judge = RecordingJudge([0.0, 0.5, 0.25, 0.0] + [0.25, 0.5, 0.5])
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: judge)
    config = InversionConfig(**(LOOK | {"select_guidance": "1,1.5,2"}))
    return invert(concept_dir, tmp_path / "run", config, model=str(tiny_sd), progress=False), judge


def test_the_best_ratio_is_recorded_with_the_rows(chosen):
    out, judge = chosen
    assert len(judge.images) == 7 and judge.script == []
    record = json.loads((out / "selection.json").read_text())
    assert record["guidance"] == {"ratios": [1.0, 1.5, 2.0], "scores": [0.25, 0.5, 0.5], "chosen": 1.5}  # tie: lower
    assert record["step"] == 2 and record["score"] == 0.5  # selection itself is unchanged
    assert load_learned(out).meta["concept_guidance_ratio"] == 1.5


def test_the_judged_images_are_what_generation_draws_at_each_ratio(chosen, tiny_sd):
    """The three judged sets equal `lego generate`'s images of the kept rows on the same noise at r · s: plain
    guidance for r = 1, concept guidance otherwise; the noise is not selection's own."""
    out, judge = chosen
    gen = load_generator(str(tiny_sd), [out])
    scale = gen.backbone.default_guidance_scale
    prompts = [gen.expand_prompt("a photo of a sphere that is {concept}")] * 2  # LOOK: select_images 2 on sphere
    seeds = [LOOK_SEED + GUIDANCE_NOISE + i for i in range(2)]
    for ratio, seen in zip((1.0, 1.5, 2.0), judge.images[4:]):
        drawn = gen.generate(prompts, seeds, num_inference_steps=LOOK["select_steps"], progress=False,
                             concept_guidance_scale=ratio * scale)
        assert all(np.array_equal(a, b) for a, b in zip(_pixels(seen), _pixels(drawn)))
    assert not np.array_equal(_pixels(judge.images[4])[0], _pixels(judge.images[5])[0])  # the ratio matters
    assert not np.array_equal(_pixels(judge.images[4])[0], _pixels(judge.images[3])[0])  # fresh noise


def test_generation_uses_the_runs_ratio_by_default(chosen, tiny_sd):
    out, _ = chosen
    gen = load_generator(str(tiny_sd), [out])
    prompt, scale = "a photo of a bear that is {concept}", gen.backbone.default_guidance_scale

    def image(**kw):
        return _pixels(gen.generate([prompt], [3], num_inference_steps=2, progress=False, **kw))[0]

    assert np.array_equal(image(), image(concept_guidance_scale=1.5 * scale))
    assert np.array_equal(image(guidance_scale=4.0), image(guidance_scale=4.0, concept_guidance_scale=6.0))
    assert not np.array_equal(image(), image(concept_guidance_scale=scale))  # the given scale wins


def test_concepts_that_chose_differently_compose_with_plain_guidance(chosen, tiny_sd, caplog):
    out, _ = chosen
    backbone = load_generator(str(tiny_sd), []).backbone
    first = load_learned(out)
    second = dataclasses.replace(first, name="other", tokens=["<other>"], subject_token=None,
                                 vectors={"<other>": first.vectors["<melted>"]},
                                 meta=first.meta | {"concept_guidance_ratio": 2.0})
    gen = ConceptGenerator(backbone, [first, second])
    with caplog.at_level(logging.INFO, logger="lego_inversion.generation"):
        assert gen.chosen_concept_guidance(7.5) is None
    assert "chose different concept guidance ratios (1.5, 2.0)" in caplog.text
    alone = ConceptGenerator(load_generator(str(tiny_sd), []).backbone, [second])
    assert alone.chosen_concept_guidance(3.0) == 6.0


def test_an_average_of_runs_records_no_ratio(chosen, tmp_path):
    out, _ = chosen
    mean = average_runs([out, out], tmp_path / "mean")
    assert load_learned(mean).meta["concept_guidance_ratio"] is None


def test_best_ratio_by_hand():
    assert best_ratio([1.0, 1.5, 2.0], [0.5, 0.25, 0.5]) == 1.0
    assert best_ratio([2.0, 1.0], [0.75, 0.25]) == 2.0


@pytest.mark.parametrize("value", ["1,x", "-1", "1,1", "1;2"])
def test_config_rejects_bad_ratios(value):
    with pytest.raises(UserError, match="select_guidance must be distinct comma-separated ratios"):
        InversionConfig(select_guidance=value)


def test_select_guidance_without_look_selection_is_one_line(tiny_sd, concept_dir, tmp_path, capsys):
    from lego_inversion.cli import main

    code = main(["invert", str(concept_dir), "--out", str(tmp_path / "o"), "--model", str(tiny_sd), "--steps", "2",
                 "--select-guidance", "1,2", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "select_guidance '1,2'" in err[0] and "--select-by look" in err[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
