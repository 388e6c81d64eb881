"""Scoring existing folders (images.jsonl and plain), and bad input: one line, exit code 2, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import make_concept_folder, run_cli, write_images

from lego_inversion.evaluation.config import load_eval_config
from lego_inversion.evaluation.plan import folder_records, resolve_concepts


def folder_config(tmp: Path, tiny: dict, lego: Path, text: Path, metrics=("vqa", "clip"), extra="") -> Path:
    cfg = tmp / "eval.toml"
    cfg.write_text(f"""
metrics = {json.dumps(list(metrics))}
[models]
vqa = "{tiny['vqa']}"
clip = "{tiny['clip']}"
detector = "{tiny['detector']}"
dino = "{tiny['dino']}"
[[concepts]]
name = "melted"
description = "melted"
questions = ["Is the {{target}} melted?"]
{extra}
[concepts.folders]
lego = "{lego}"
text = {{path = "{text}", target = "toy bear"}}
""")
    return cfg


def lego_generate_folder(folder: Path, seeds, subject="toy bear") -> Path:
    """A folder in the `lego generate --out` layout: PNGs plus images.jsonl."""
    from PIL import Image
    import numpy as np

    folder.mkdir(parents=True)
    rows = []
    for s in seeds:
        arr = (np.random.default_rng(s).random((24, 24, 3)) * 255).astype("uint8")
        Image.fromarray(arr).save(folder / f"{s:04d}.png")
        rows.append({"file": f"{s:04d}.png", "prompt": "a photo of a toy bear {melted}", "expanded_prompt": "x",
                     "seed": s, "concepts": ["melted"], "subject": subject, "method": "lego"})
    (folder / "images.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def expect_error(capsys, argv, *fragments) -> str:
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("[transformers]")]
    assert len(err) == 1 and err[0].startswith("lego: error: "), err
    for f in fragments:
        assert f in err[0], err[0]
    return err[0]


def test_score_existing_folders(tmp_path, tiny):
    lego = lego_generate_folder(tmp_path / "gen_lego", [0, 1, 2, 3])
    text = tmp_path / "gen_text"
    write_images(text, 4, seed0=0)  # img_s0.png .. img_s3.png: seeds from the file names
    cfg = folder_config(tmp_path, tiny, lego, text)
    concepts = resolve_concepts(load_eval_config(cfg))
    recs = folder_records(load_eval_config(cfg), concepts)
    assert sorted((r.method, r.seed, r.subject) for r in recs) == sorted(
        [(m, s, "toy bear") for m in ("lego", "text") for s in range(4)])
    out = tmp_path / "out"
    assert run_cli(["evaluate", str(cfg), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [(r["method"], r["metrics"]["vqa"]["n"]) for r in report["rows"]] == [("lego", 4), ("text", 4)]
    assert not (out / "images").exists()  # scoring mode generates nothing
    html = (out / "report.html").read_text()
    assert 'src="../gen_lego/0000.png"' in html  # image grids link the scored folders by relative path


def test_missing_question_templates(tmp_path, tiny, capsys, fake_generation):
    ex = write_images(tmp_path / "ex", 1)
    c = make_concept_folder(tmp_path / "runs/squeezed", "squeezed", "lego", ex)  # no questions, no count
    out = tmp_path / "out"
    expect_error(capsys, ["evaluate", "--concept", str(c), "--target", "cat", "--out", str(out),
                          "--vqa-model", str(tiny["vqa"])], "concept 'squeezed' has no question templates")
    assert not out.exists() and not fake_generation


def test_unknown_model_offline_loses_nothing(tmp_path, tiny, capsys, monkeypatch, fake_generation):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ex = write_images(tmp_path / "ex", 1)
    c = make_concept_folder(tmp_path / "runs/frozen", "frozen", "lego", ex, questions=["Is the {target} frozen?"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    expect_error(capsys, ["evaluate", "--concept", str(c), "--target", "cat", "--out", str(out),
                          "--vqa-model", "nobody-xyz/blip2-none", "--clip-model", str(tiny["clip"]),
                          "--dino-model", str(tiny["dino"])], "models.vqa = 'nobody-xyz/blip2-none'", "cache")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and not fake_generation


def test_empty_folder(tmp_path, tiny, capsys):
    lego = lego_generate_folder(tmp_path / "gen_lego", [0, 1])
    (tmp_path / "empty").mkdir()
    cfg = folder_config(tmp_path, tiny, lego, tmp_path / "empty")
    expect_error(capsys, ["evaluate", str(cfg), "--out", str(tmp_path / "out")], "empty", "no images")


def test_corrupt_image_stops_before_scoring(tmp_path, tiny, capsys):
    lego = lego_generate_folder(tmp_path / "gen_lego", [0, 1])
    text = tmp_path / "gen_text"
    write_images(text, 2)
    (text / "img_s1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cfg = folder_config(tmp_path, tiny, lego, text)
    out = tmp_path / "out"
    expect_error(capsys, ["evaluate", str(cfg), "--out", str(out)], "img_s1.png", "corrupt")
    assert not (out / "scores").exists() and not (out / "report.json").exists()


def test_mismatched_seeds(tmp_path, tiny, capsys):
    lego = lego_generate_folder(tmp_path / "gen_lego", [0, 1, 2])
    text = tmp_path / "gen_text"
    write_images(text, 2)  # seeds 0, 1
    cfg = folder_config(tmp_path, tiny, lego, text)
    expect_error(capsys, ["evaluate", str(cfg), "--out", str(tmp_path / "out")], "mismatched seeds",
                 "seed 2", "lego has", "text does not")


OK_CONCEPT = "\n[[concepts]]\nname = 'x'\nquestions = ['q']\n[concepts.folders]\nlego = 'f'"


@pytest.mark.parametrize("body, fragments", [
    ("bogus = 1" + OK_CONCEPT, ("unknown field `bogus`",)),
    ("num_images = 'many'" + OK_CONCEPT, ("num_images", "wrong type")),
    ("[models]\ndetector_threshold = 2.0" + OK_CONCEPT, ("models.detector_threshold",)),
    ("metrics = ['fid']" + OK_CONCEPT, ("unknown metric 'fid'",)),
    ("metrics = ['vqa']" + OK_CONCEPT, ("image folder", "does not exist")),
    ("targets = ['cat']\n[[concepts]]\nname = 'x'\nquestions = ['q']\n[concepts.methods]\nlego = 'nowhere'",
     ("nowhere", "concept.json")),
    ("targets = ['cat']\n[[concepts]]\nname = 'x'\nquestions = ['q']", ("concept 'x'", "methods", "folders")),
    ("targets = [", ("not valid TOML",)),
])
def test_bad_config(tmp_path, capsys, body, fragments):
    cfg = tmp_path / "eval.toml"
    cfg.write_text(body)
    expect_error(capsys, ["evaluate", str(cfg), "--out", str(tmp_path / "out")], *fragments)
    assert not (tmp_path / "out").exists()


def test_nothing_to_evaluate(tmp_path, capsys):
    expect_error(capsys, ["evaluate", "--out", str(tmp_path / "out")], "nothing to evaluate")


def test_the_readme_example_config_names_the_readme_runs():
    """examples/eval.toml, loaded by `lego evaluate`'s own reader, points at the folders the README's
    `lego invert ... --out runs/frozen` and `--out runs/frozen_ti` lines write, and the README runs it."""
    repo = Path(__file__).resolve().parents[2]
    cfg = load_eval_config(repo / "examples" / "eval.toml")
    (concept,) = cfg.concepts
    assert {m: p.resolve() for m, p in concept.methods.items()} == {"lego": repo / "runs" / "frozen",
                                                                     "ti": repo / "runs" / "frozen_ti"}
    assert cfg.metrics == ["oracle"] and cfg.targets
    readme = (repo / "README.md").read_text(encoding="utf-8")
    for line in ("--out runs/frozen ", "--out runs/frozen_ti ", "lego evaluate examples/eval.toml --out eval/"):
        assert line in readme
