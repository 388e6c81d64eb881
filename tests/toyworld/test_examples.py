"""`lego toyworld make-examples` (deterministic, the package's concept-folder format, the paper's 2 + 2 setting),
and the toy-world commands' flags, generated from their config dataclasses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lego_inversion.config import from_arguments
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


def test_make_examples_replaces_an_old_folder_whole(tmp_path):
    old = tmp_path / "melted_cube"
    (old / "with").mkdir(parents=True)
    (old / "with" / "9.png").write_bytes(b"stale")
    (made,) = make_examples(tmp_path, ["melted_cube"])
    assert made == old and not (old / "with" / "9.png").exists()
    assert sorted(p.name for p in (old / "with").iterdir()) == ["0.png", "1.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["melted_cube"]  # no temporary or old folder beside it


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


def _parse(*argv):
    import argparse

    from lego_inversion.toyworld import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["toyworld", *argv])


@pytest.mark.parametrize(("command", "config"), [("train", "TrainConfig"), ("train-oracle", "OracleTrainConfig")])
def test_training_flags_come_from_the_config_fields(command, config):
    """Every field is a flag; flags not given stay None and the config takes the field's default."""
    import dataclasses

    from lego_inversion.toyworld import train_configs

    cls = getattr(train_configs, config)
    args = _parse(command)
    fields = dataclasses.fields(cls)
    assert {f.name: getattr(args, f.name) for f in fields} == dict.fromkeys(dataclasses.asdict(cls()))
    assert from_arguments(cls, args) == cls()
    assert all(f.metadata.get("help") for f in fields)  # every option documents itself


def test_train_flags_are_typed_and_reach_the_config(capsys):
    from lego_inversion.config import from_arguments
    from lego_inversion.toyworld.train_configs import TrainConfig

    args = _parse("train", "--unet-steps", "3000", "--p-describe", "0", "--init-from", "", "--vae-lr", "1e-3")
    cfg = from_arguments(TrainConfig, args)
    assert (cfg.unet_steps, cfg.p_describe, cfg.vae_lr) == (3000, 0.0, 1e-3)
    assert isinstance(cfg.unet_steps, int) and isinstance(cfg.p_describe, float)
    with pytest.raises(SystemExit):
        _parse("train", "--unet-steps", "many")
    assert "--unet-steps: invalid int value" in capsys.readouterr().err


def test_train_help_shows_each_fields_help_and_default(capsys):
    with pytest.raises(SystemExit):
        _parse("train", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--cfg-dropout CFG_DROPOUT probability that a caption is replaced" in text
    assert "(default: 0.1)" in text and "--init-from RUN_DIR" in text


def test_bad_train_flag_is_a_one_line_error_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["toyworld", "train", "--out", str(out), "--warmup", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lego: error: train config: warmup") and "\n" not in err
    assert not out.exists()


def test_render_flags_come_from_the_scene_fields(tmp_path):
    from lego_inversion.config import from_arguments

    args = _parse("render", "--subject", "star", "--concept", "count", "--count", "3", "--out", "x.png")
    assert from_arguments(Scene, args) == Scene("star", "red", "count", 0, 3, 0)
    with pytest.raises(SystemExit):
        _parse("render", "--out", "x.png")  # --subject has no default: required


def test_train_config_rejects_bad_mixture_and_missing_init(tmp_path):
    from lego_inversion.errors import UserError
    from lego_inversion.toyworld.train_configs import TrainConfig

    with pytest.raises(UserError, match="p_none"):
        TrainConfig(p_none=0.7, p_generic=0.5)
    with pytest.raises(UserError, match="init_from"):
        TrainConfig(init_from=str(tmp_path))
    with pytest.raises(UserError, match="vae_crop"):
        TrainConfig(vae_crop=60)


def test_describe_zero_reproduces_the_first_models_captions():
    """p_describe=0 draws no extra random numbers: captions equal the original (plain-only) rule's."""
    from lego_inversion.toyworld.training_data import BASE_TEMPLATE, caption, sample_scenes

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
