"""The oracle: accuracy on fresh renders (fast subset of the reported 2000), scoring code by hand."""

from __future__ import annotations

import pytest

from lego_inversion.errors import UserError
from lego_inversion.toyworld.oracle import BUNDLED, HEADS, Oracle, accuracy, sample_uniform
from lego_inversion.toyworld.render import Scene, render

needs_oracle = pytest.mark.skipif(not (BUNDLED / "oracle.safetensors").is_file(), reason="oracle not trained yet")


@needs_oracle
def test_oracle_reads_fresh_renders():
    oracle = Oracle.load()
    scenes = sample_uniform(150, seed=4242)  # seeds never used in training (0) or the reported test (10000)
    acc = accuracy(oracle, scenes)
    assert set(acc) == set(HEADS)
    for head, value in acc.items():
        assert value >= 0.9, (head, value)


@needs_oracle
def test_reported_accuracy_meets_the_bar():
    meta = Oracle.load().meta
    assert meta["n_test"] >= 1000
    assert min(meta["fresh_render_accuracy"].values()) >= 0.95, meta["fresh_render_accuracy"]


class _Stub(Oracle):
    def __init__(self, answers):
        self.answers = answers

    def predict(self, images):
        return self.answers


def test_accuracy_against_hand_count():
    scenes = [Scene("cube", "red"), Scene("ball", "blue", "melted", 1), Scene("star", "green", "count", 0, 3)]
    answers = [
        {"subject": "cube", "appearance": "red", "concept": "none", "variant": 0, "count": 1},  # all right
        {"subject": "cube", "appearance": "blue", "concept": "melted", "variant": 0, "count": 1},  # subject, variant
        {"subject": "star", "appearance": "red", "concept": "count", "variant": 0, "count": 4},  # colour, count
    ]
    images = [render(s) for s in scenes]
    acc = accuracy(_Stub(answers), scenes, images)
    assert acc["subject"] == pytest.approx(2 / 3)
    assert acc["appearance"] == pytest.approx(2 / 3)
    assert acc["concept"] == pytest.approx(1.0)
    assert acc["variant"] == pytest.approx(1 / 2)  # scored only where a concept is present (2 scenes)
    assert acc["count"] == pytest.approx(2 / 3)


def test_missing_oracle_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="train-oracle"):
        Oracle.load(tmp_path)
