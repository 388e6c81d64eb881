"""`lego toyworld make-examples`: deterministic, in the lead's concept-folder format, paper setting (2 + 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    assert (args.unet_steps, args.vae_steps, args.n_images, args.time_budget_min, args.seed) == (
        cfg.unet_steps, cfg.vae_steps, cfg.n_images, cfg.time_budget_min, cfg.seed)
