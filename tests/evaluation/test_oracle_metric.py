"""The `oracle` metric: toy-world images judged against the concept's [toyworld] ground truth (Table 2 offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import make_concept_folder, run_cli, write_images

from lego_inversion.backbones import resolve_model
from lego_inversion.errors import UserError
from lego_inversion.evaluation import oracle
from lego_inversion.evaluation.config import config_from_concept_folders
from lego_inversion.evaluation.plan import chosen_metrics, resolve_concepts
from lego_inversion.evaluation.stats import wilson_interval

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MELTED = {"subject": "cube", "appearance": "checkered", "concept": "melted", "variant": 1, "count": 1}
THREE = {"subject": "star", "appearance": "checkered", "concept": "count", "variant": 1, "count": 3}


def seen(**kw) -> dict:
    return {"subject": "ball", "appearance": "red", "concept": "melted", "variant": 1, "count": 1} | kw


@pytest.mark.parametrize("prediction, truth, target, expected", [
    # the personalized concept on the target, in the target's own colour: all good, no leakage
    (seen(), MELTED, "ball", dict(concept=True, variant=True, count=None, leakage=False, fidelity=True)),
    # the generic variant: the concept is there, the personalized look is not
    (seen(variant=0), MELTED, "ball", dict(concept=True, variant=False, count=None, leakage=False, fidelity=True)),
    # the exemplar's checkered texture and its subject class instead of the target
    (seen(subject="cube", appearance="checkered"), MELTED, "red ball",
     dict(concept=True, variant=True, count=None, leakage=True, fidelity=False)),
    # another concept: neither concept nor variant, whatever the variant head says
    (seen(concept="frozen"), MELTED, "ball", dict(concept=False, variant=False, count=None, leakage=False,
                                                 fidelity=True)),
    # cardinality: exact count only
    (seen(concept="count", count=3), THREE, "balls", dict(concept=True, variant=True, count=True, leakage=False,
                                                          fidelity=True)),
    (seen(concept="count", count=4), THREE, "balls", dict(concept=True, variant=True, count=False, leakage=False,
                                                          fidelity=True)),
])
def test_judge_by_hand(prediction, truth, target, expected):
    assert oracle.judge(prediction, truth, target) == expected


def test_target_subject():
    assert [oracle.target_subject(t) for t in ("ball", "Balls", "red ball", "toy bear", "three stars")] == [
        "ball", "ball", "ball", "bear", "star"]
    assert oracle.target_subject("cat") is None and oracle.target_subject("a ball on a cube") is None


def test_toy_world_model_markers(tmp_path, tiny_sd):
    assert oracle.is_toy_world_model(resolve_model(None)) and oracle.is_toy_world_model(resolve_model("toy"))
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LDMTextToImagePipeline"}))
    assert not oracle.is_toy_world_model(folder)  # an LDM pipeline, but not trained by `lego toyworld train`
    (folder / "training.json").write_text("{}")
    assert oracle.is_toy_world_model(folder)
    assert not oracle.is_toy_world_model(tiny_sd) and not oracle.is_toy_world_model("CompVis/ldm-text2im-large-256")


def test_bad_truth_names_the_field():
    with pytest.raises(UserError, match=r"c\.json: toyworld\.subject = 'cat'; use one of cube, ball"):
        oracle.read_truth({"toyworld": MELTED | {"subject": "cat"}}, "c.json")
    with pytest.raises(UserError, match=r"toyworld\.count = -1"):
        oracle.read_truth({"toyworld": THREE | {"count": -1}}, "c.json")
    assert oracle.read_truth({"toyworld": {}}, "c.json") is None and oracle.read_truth({}, "c.json") is None


def test_metrics_are_chosen_by_model(tmp_path, tiny_sd):
    ex = write_images(tmp_path / "ex", 1)
    kw = dict(questions=["Is the {target} melted?"])
    toy = make_concept_folder(tmp_path / "toy", "melted", "lego", ex, toyworld=MELTED, **kw)
    plain = make_concept_folder(tmp_path / "plain", "frozen", "lego", ex, **kw)  # toy model, no ground truth
    sd = make_concept_folder(tmp_path / "sd", "crumpled", "lego", ex, toyworld=MELTED, base_model=str(tiny_sd), **kw)

    def metrics(*folders, **over):
        cfg = config_from_concept_folders(folders, targets=["ball"], **over)
        return chosen_metrics(cfg, resolve_concepts(cfg))

    assert metrics(toy) == ["oracle"]
    assert metrics(plain) == metrics(sd) == ["vqa", "count", "clip", "dino"]
    assert metrics(toy, sd) == ["vqa", "count", "clip", "dino", "oracle"]  # the oracle judges the toy one only
    mixed = resolve_concepts(config_from_concept_folders([toy, sd], targets=["ball"]))
    assert [(rc.name, rc.oracle_ready) for rc in mixed] == [("melted", True), ("crumpled", False)]
    assert metrics(toy, metrics=["clip"]) == ["clip"]
    with pytest.raises(UserError, match=r"concept 'crumpled' \(lego\) uses model .*not a toy-world model"):
        metrics(sd, metrics=["oracle"])
    with pytest.raises(UserError, match="concept 'frozen' has no `toyworld` table"):
        metrics(plain, metrics=["oracle"])
    with pytest.raises(UserError, match="concept 'melted': target 'cat' names no toy-world subject; the oracle "
                                        "knows cube, ball, pyramid, star, heart, bear"):
        resolve_concepts(config_from_concept_folders([toy], targets=["cat"], metrics=["oracle"]))


def test_table2_offline_on_the_embedded_toy_model(tmp_path):
    """Invert a toy-world example (1 step), then `lego evaluate` with no metric and no evaluator model named:
    the oracle is chosen, nothing is downloaded (HF_HUB_OFFLINE), and every rate equals a hand count."""
    from PIL import Image

    from lego_inversion.config import InversionConfig
    from lego_inversion.toyworld.oracle import Oracle
    from lego_inversion.trainer import invert

    run = invert(EXAMPLES / "three_stars", tmp_path / "run", InversionConfig(
        steps=1, checkpoint_every=1, validation_images=1, validation_steps=1), progress=False)
    out = tmp_path / "out"
    assert run_cli(["evaluate", "--concept", str(run), "--target", "balls", "--num-images", "2", "--steps", "2",
                    "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["metrics"] == ["oracle"] and report["methods"] == ["lego", "text"]
    assert report["concepts"][0]["toyworld"] == THREE

    reader = Oracle.load()
    rows = {r["method"]: r for r in report["rows"]}
    for method, prompt in (("lego", "a photo of {three_stars} balls"), ("text", "a photo of three balls")):
        manifest = [json.loads(x) for x in (out / "images/three_stars" / method / "images.jsonl").read_text()
                    .splitlines()]
        assert [(m["prompt"], m["seed"]) for m in manifest] == [(prompt, 0), (prompt, 1)]
        # the oracle's own reading of the image files, judged by the rules written out
        preds = reader.predict([Image.open(out / "images/three_stars" / method / m["file"]) for m in manifest])
        by_hand = {"oracle_concept": sum(p["concept"] == "count" for p in preds),
                   "oracle_variant": sum(p["concept"] == "count" and p["variant"] == 1 for p in preds),
                   "oracle_count": sum(p["count"] == 3 for p in preds),
                   "oracle_leakage": sum(p["appearance"] == "checkered" for p in preds),
                   "oracle_fidelity": sum(p["subject"] == "ball" for p in preds)}
        metrics = rows[method]["metrics"]
        assert set(metrics) == set(by_hand)
        for name, k in by_hand.items():
            s = metrics[name]
            assert (s["k"], s["n"]) == (k, 2), (method, name)
            assert (s["ci_low"], s["ci_high"]) == pytest.approx(wilson_interval(k, 2), abs=1e-6)
        assert metrics["oracle_count"]["requested"] == 3
        assert metrics["oracle_count"]["histogram"] == {str(c): sum(p["count"] == c for p in preds)
                                                        for c in range(max(p["count"] for p in preds) + 1)}

    md = (out / "report.md").read_text()
    k = rows["lego"]["metrics"]["oracle_variant"]["k"]
    assert f"| three_stars | oracle: personalized variant | {k}/2 (" in md
    html = (out / "report.html").read_text()
    assert "toy-world oracle: toyworld-oracle#" in html and "plots/oracle_leakage.png" in html
    for name in ("oracle_concept", "oracle_variant", "oracle_count", "oracle_leakage", "oracle_fidelity"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert any(line.startswith("three_stars,lego,,oracle_count,2,") for line in
               (out / "report.csv").read_text().splitlines())
