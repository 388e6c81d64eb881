"""`lego` end to end through main(): invert -> generate -> export, and bad input as users meet it."""

import json

import pytest

from concept_fixtures import CONCEPT_TOML, make_concept
from lego_inversion.cli import main


def test_invert_generate_export_end_to_end(tiny_sd, tmp_path, capsys):
    concept = make_concept(tmp_path / "melted")
    run = tmp_path / "run"
    assert main(["invert", str(concept), "--out", str(run), "--model", str(tiny_sd), "--steps", "2",
                 "--validation-steps", "1", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["steps"] == 2
    assert (run / "validation" / "step_000002.png").is_file()
    gen = tmp_path / "gen"
    assert main(["generate", "--concept", str(run), "--prompt", "a photo of a bear that is {concept}",
                 "--prompt", "a {subject}", "--out", str(gen), "--num-images", "2", "--steps", "2", "--subject", "bear",
                 "--seed", "5"]) == 0
    records = [json.loads(line) for line in (gen / "images.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [5, 6, 5, 6]
    assert records[0]["expanded_prompt"] == "a photo of a bear that is <melted>"
    assert records[2]["expanded_prompt"] == "a <subj>" and records[0]["method"] == "lego"
    assert records[0]["subject"] == "bear"
    assert all((gen / r["file"]).is_file() for r in records) and (gen / "grid.png").is_file()
    assert main(["export", str(run), "--format", "comfyui", "--out", str(tmp_path / "m.safetensors")]) == 0
    assert (tmp_path / "m.safetensors").is_file()


@pytest.mark.parametrize("args, message", [
    (lambda c, o, m: ["invert", str(c / "nope"), "--out", str(o)], "not a folder"),
    (lambda c, o, m: ["invert", str(c), "--out", str(o), "--model", m, "--steps", "0"], "steps must be at least 1"),
    (lambda c, o, m: ["invert", str(c), "--out", str(o), "--model", str(c)], "not a diffusers pipeline folder"),
    (lambda c, o, m: ["generate", "--concept", str(c), "--prompt", "x", "--out", str(o)], "no learned_embeds"),
    (lambda c, o, m: ["invert", str(c), "--out", str(o), "--ema-decay", "1"], "ema_decay must lie in [0, 1)"),
    (lambda c, o, m: ["invert", str(c), "--out", str(o), "--ema-decay", "-0.5"], "ema_decay must lie in [0, 1)"),
    (lambda c, o, m: ["invert", str(c), "--out", str(o), "--ema-decay", "0.9", "--method", "dreambooth"],
     "dreambooth fine-tunes the UNet"),
])
def test_bad_input_exit_code_2_one_line_nothing_written(tiny_sd, tmp_path, capsys, args, message):
    concept = make_concept(tmp_path / "melted")
    out = tmp_path / "out"
    assert main(args(concept, out, str(tiny_sd))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lego: error:") and message in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_bad_toml_via_cli(tmp_path, capsys):
    concept = make_concept(tmp_path / "c", CONCEPT_TOML + "\n[prompts]\n")
    assert main(["invert", str(concept), "--out", str(tmp_path / "o"), "--model", "x"]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_every_option_help_names_its_default():
    import argparse

    from lego_inversion.cli import build_parser

    def walk(parser):
        for action in parser._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    yield from walk(sub)
            elif action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                yield parser.prog, action

    checked = list(walk(build_parser()))
    assert len(checked) > 10
    for prog, action in checked:
        assert "default" in action.help.lower(), f"{prog} {action.option_strings[0]}"
