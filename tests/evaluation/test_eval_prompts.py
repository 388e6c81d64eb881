"""Prompts and question templates of `lego evaluate`: filled by `lego_inversion.prompts`, checked when read."""

from __future__ import annotations

import json

import pytest
from eval_helpers import make_concept_folder, run_cli, write_images
from test_folders_and_errors import expect_error

from lego_inversion.errors import UserError
from lego_inversion.evaluation.config import load_eval_config


def test_cardinality_prompt_uses_the_count_from_concept_json(tmp_path, tiny, fake_generation):
    # the count comes from the run's concept.json only (the --concept folder), not from an evaluation config
    ex = write_images(tmp_path / "ex", 1)
    three = make_concept_folder(tmp_path / "runs/three", "three", "lego", ex, count=3, description="three")
    out = tmp_path / "out"
    assert run_cli(["evaluate", "--concept", str(three), "--target", "toy bears", "--num-images", "1",
                    "--metrics", "clip", "--clip-model", str(tiny["clip"]), "--out", str(out), "--no-progress"]) == 0
    prompts = {tuple(c["concepts"]): c["prompts"] for c in fake_generation if "prompts" in c}
    assert prompts == {(str(three),): ["a photo of {three} toy bears"], (): ["a photo of three toy bears"]}
    rows = [json.loads(x) for x in (out / "images/three/text/images.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["concepts"], r["subject"]) for r in rows] == [
        ("a photo of three toy bears", ["three"], "toy bears")]  # the text baseline records what it stands in for


def _config(tmp_path, prompt=None, questions=("Is the {target} melted?",)) -> str:
    ex = write_images(tmp_path / "ex", 1)
    run = make_concept_folder(tmp_path / "runs/melted", "melted", "lego", ex, questions=["Is the {target} melted?"])
    cfg = tmp_path / "eval.toml"
    lines = ["targets = ['cat']", "[[concepts]]", "name = 'melted'", f"questions = {json.dumps(list(questions))}"]
    if prompt is not None:
        lines.append(f"prompt = {json.dumps(prompt)}")
    cfg.write_text("\n".join(lines + ["[concepts.methods]", f"lego = '{run}'"]) + "\n")
    return str(cfg)


@pytest.mark.parametrize("prompt, questions, fragments", [
    ("a photo of a {traget} {concept}", None, ("concepts[0]", "prompt", "unknown placeholder {traget}",
                                               "allowed: {concept}, {target}")),
    ("a photo of a {target}", None, ("concepts[0]", "prompt must contain {concept}")),
    ("a {target} {concept", None, ("concepts[0]", "prompt", "unmatched '{'")),
    (None, ["Is the {subject} melted?"], ("concepts[0]", "questions", "unknown placeholder {subject}")),
])
def test_bad_template_fails_when_the_config_is_read(tmp_path, capsys, fake_generation, prompt, questions,
                                                    fragments):
    cfg = _config(tmp_path, prompt, questions or ("Is the {target} melted?",))
    with pytest.raises(UserError) as err:
        load_eval_config(cfg)
    assert all(f in str(err.value) for f in fragments) and str(err.value).startswith(cfg), str(err.value)
    out = tmp_path / "out"
    expect_error(capsys, ["evaluate", cfg, "--out", str(out)], *fragments)
    assert not out.exists() and not fake_generation  # nothing generated, nothing written


def test_bad_question_in_concept_json_fails_before_generation(tmp_path, capsys, fake_generation):
    ex = write_images(tmp_path / "ex", 1)
    run = make_concept_folder(tmp_path / "runs/melted", "melted", "lego", ex, questions=["Is the {targte} melted?"])
    out = tmp_path / "out"
    expect_error(capsys, ["evaluate", "--concept", str(run), "--target", "cat", "--out", str(out)],
                 f"{run / 'concept.json'}: evaluation.questions", "unknown placeholder {targte}")
    assert not out.exists() and not fake_generation


def test_literal_braces_and_filled_questions(tmp_path):
    cfg = load_eval_config(_config(tmp_path, "a {{cosy}} photo of a {target} {concept}",
                                   ["Is the {target} {{really}} melted?"]))
    from lego_inversion.evaluation.plan import resolve_concepts

    cfg.metrics = ["vqa"]
    rc = resolve_concepts(cfg)[0]
    assert rc.prompt("cat", "lego") == "a {cosy} photo of a cat {melted}"
    assert rc.text_prompt("cat") == "a {cosy} photo of a cat melted"
    assert rc.questions_for("cat") == ["Is the cat {really} melted?"]
