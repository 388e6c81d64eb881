"""`lego toyworld make-examples`: deterministic, in the lead's concept-folder format, paper setting (2 + 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image

from lego_inversion.cli import main
from lego_inversion.concept import load_concept
from lego_inversion.toyworld.examples import EXAMPLES, make_examples
from lego_inversion.toyworld.render import Scene, render

REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_make_examples_is_deterministic(tmp_path):
    make_examples(tmp_path / "a")
    assert main(["toyworld", "make-examples", "--out", str(tmp_path / "b")]) == 0
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b and len(a) == 5 * len(EXAMPLES)
    assert not list((tmp_path / "a").glob(".*"))  # no temporary folders left behind


def test_committed_examples_match_the_generator(tmp_path):
    make_examples(tmp_path)
    for ex in EXAMPLES:
        assert _tree(tmp_path / ex.name) == _tree(REPO_EXAMPLES / ex.name), ex.name


def test_examples_load_as_concept_folders_with_ground_truth(tmp_path):
    make_examples(tmp_path)
    kinds = set()
    for ex in EXAMPLES:
        spec = load_concept(tmp_path / ex.name)
        assert len(spec.with_images) == 2 and len(spec.without_images) == 2
        data = tomllib.loads((tmp_path / ex.name / "concept.toml").read_text())
        truth = data["toyworld"]
        assert truth["variant"] >= 1  # personalized variants only: captions never name them
        # the with-images really are the ground-truth scene; the without-images are the same subject, plain
        w = np.asarray(Image.open(min((tmp_path / ex.name / "with").glob("*.png"))))
        scene = Scene(truth["subject"], truth["appearance"], truth["concept"], truth["variant"], truth["count"],
                      seed=ex.seeds[0])
        assert np.array_equal(w, np.asarray(render(scene)))
        kinds.add("multi" if len(spec.tokens) > 1 else "single")
        if truth["concept"] == "count":
            kinds.add("count")
            assert data["evaluation"]["count"] == truth["count"]
    assert kinds == {"multi", "single", "count"}


def test_unknown_example_name_is_a_one_line_error(tmp_path, capsys):
    assert main(["toyworld", "make-examples", "--out", str(tmp_path), "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lego: error: --only") and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_render_command_rejects_bad_subject(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["toyworld", "render", "--subject", "dragon", "--out", str(out)]) == 2
    assert "subject" in capsys.readouterr().err and not out.exists()
    assert main(["toyworld", "render", "--subject", "cube", "--concept", "melted", "--out", str(out)]) == 0
    assert Image.open(out).size == (64, 64)


def test_train_command_defaults_match_the_config():
    import argparse

    from lego_inversion.toyworld import cli
    from lego_inversion.toyworld.model import TrainConfig

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["toyworld", "train"])
    cfg = TrainConfig()
    keys = ("unet_steps", "vae_steps", "n_images", "time_budget_min", "seed", "p_none", "p_generic", "p_describe",
            "init_from")
    assert {k: getattr(args, k) for k in keys} == {k: getattr(cfg, k) for k in keys}


def test_train_config_rejects_bad_mixture_and_missing_init(tmp_path):
    from lego_inversion.errors import UserError
    from lego_inversion.toyworld.model import TrainConfig

    with pytest.raises(UserError, match="p_none"):
        TrainConfig(p_none=0.7, p_generic=0.5)
    with pytest.raises(UserError, match="init_from"):
        TrainConfig(init_from=str(tmp_path))


def test_describe_zero_reproduces_the_first_models_captions():
    """p_describe=0 draws no extra random numbers: captions equal the original (plain-only) rule's."""
    from lego_inversion.toyworld.data import BASE_TEMPLATE, caption, sample_scenes

    scenes = sample_scenes(500, seed=3, p_none=0.40, p_generic=0.45)
    r1, r2 = np.random.default_rng(0), np.random.default_rng(0)
    for s in scenes:
        got = caption(s, r1, p_describe=0.0)
        adj = s.appearance + " " if r2.random() < 0.8 else ""  # the original rule, by hand
        if s.concept == "none" or s.variant:
            assert got == BASE_TEMPLATE.format(s=adj + s.subject)
        elif s.concept != "count":
            assert got != BASE_TEMPLATE.format(s=adj + s.subject)
            r2.integers(3 if s.concept == "sleeping" else 2)  # the template draw
    assert r1.random() == r2.random()  # both generators consumed exactly the same draws


def test_train_entry_point_overrides_are_typed():
    """`python -m lego_inversion.toyworld.model OUT key=value ...` parses through config.parse_overrides."""
    from lego_inversion.config import parse_overrides
    from lego_inversion.toyworld.model import TrainConfig

    got = parse_overrides(TrainConfig, ["init_from=runs/a", "unet_steps=3000", "p_describe=0"], exclude=("out",))
    assert got == {"init_from": "runs/a", "unet_steps": 3000, "p_describe": 0.0}
    assert isinstance(got["unet_steps"], int) and isinstance(got["p_describe"], float)
    with pytest.raises(ValueError, match="unet_steps takes a int"):
        parse_overrides(TrainConfig, ["unet_steps=many"])
    with pytest.raises(ValueError, match="other than out"):
        parse_overrides(TrainConfig, ["out=x"], exclude=("out",))
