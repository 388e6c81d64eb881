"""`--select-by look`: rows kept by the concept's look on other subjects (selection.LookSelector, judges.py), and the
best of several seeds copied to <concept>-<method>-best (sweep.keep_best)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lego_inversion import judges
from lego_inversion.backbones import load_backbone
from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.sweep import keep_best
from lego_inversion.trainer import InversionRun, invert
from test_selection import interrupted_and_resumed

sys.path.insert(0, str(Path(__file__).parent / "evaluation"))
import tiny_models

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = dict(steps=6, checkpoint_every=2, validation_steps=1, validation_images=1)
LOOK = dict(select_every=2, select_by="look", select_subjects="cube,sphere", select_images=2, select_steps=1, **FAST)


class ScriptedJudge:
    """Scores each image of a call with the next value of `script`; records the subjects it was asked about."""

    def __init__(self, script):
        self.script, self.calls = list(script), []

    def __call__(self, images, subjects):
        self.calls.append(list(subjects))
        value = self.script.pop(0)
        return [value] * len(images)


def test_config_rejects_bad_look_values():
    for bad in ({"select_by": "vibes"}, {"select_images": 0}, {"select_steps": 0}, {"select_steps": True}):
        with pytest.raises(UserError, match="select"):
            InversionConfig(**bad)


def test_look_keeps_the_best_rows_ties_to_the_later_and_leaves_training_alone(tiny_sd, concept_dir, tmp_path,
                                                                             monkeypatch):
    judge = ScriptedJudge([0.5, 0.75, 0.75, 0.25])  # steps 0, 2, 4, 6: the tie at 4 wins over 2
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: judge)
    picked = invert(concept_dir, tmp_path / "picked", InversionConfig(**LOOK), model=str(tiny_sd), progress=False)
    # the exemplar's own subject ("cube") is never judged; each subject gets select_images images
    assert judge.calls == [["sphere", "sphere"]] * 4
    assert json.loads((picked / "selection.json").read_text()) == {"select_by": "look", "step": 4, "score": 0.75,
                                                                    "kept_steps": [4]}
    # the kept rows are the step-4 rows of the same training: a 4-step run without selection ends on them
    four = invert(concept_dir, tmp_path / "four", InversionConfig(**(FAST | {"steps": 4})), model=str(tiny_sd),
                  progress=False)
    a, b = load_file(picked / "learned_embeds.safetensors"), load_file(four / "learned_embeds.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with safe_open(str(picked / "learned_embeds.safetensors"), "pt") as fh:
        meta = json.loads(fh.metadata()["lego_inversion"])
    assert meta["selected_step"] == 4 and meta["selected_score"] == 0.75


def test_look_images_share_noise_across_seeds_and_use_the_runs_tokens(tiny_sd, concept_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: ScriptedJudge([0.0] * 4))
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    a = InversionRun(spec, backbone, InversionConfig(seed=0, **LOOK), tmp_path / "a", alias="0")
    b = InversionRun(spec, backbone, InversionConfig(seed=1, **LOOK), tmp_path / "b", alias="1")
    assert torch.equal(a.selector.latents, b.selector.latents)
    assert not torch.equal(a.selector.latents[0], a.selector.latents[1])
    assert a.selector.prompts == [f"a photo of a sphere that is {a.internal['<melted>']}"] * 2
    assert a.internal["<melted>"] != b.internal["<melted>"]


def test_the_judge_draws_with_select_steps_and_the_grid_with_validation_steps(tiny_sd, concept_dir, tmp_path,
                                                                              monkeypatch):
    """The judged images and the validation grid are separate draws, each with its own sampler steps."""
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: ScriptedJudge([0.0] * 4))
    backbone = load_backbone(str(tiny_sd))
    calls = []
    sample = backbone.sample
    monkeypatch.setattr(backbone, "sample", lambda prompts, latents, num_inference_steps, **k: (
        calls.append((len(prompts), num_inference_steps)), sample(prompts, latents, num_inference_steps, **k))[1])
    config = InversionConfig(**(LOOK | {"select_steps": 3, "validation_steps": 2}))
    run = InversionRun(load_concept(concept_dir), backbone, config, tmp_path / "o")
    run.selector.offer(run)
    run.validate()
    # the initializer's score when the run is built, the offer (2 images each: select_images × 1 subject), the grid
    assert calls == [(2, 3), (2, 3), (1, 2)]
    assert InversionConfig().resolved({}).select_steps == 25  # off the toy world: as many as the grid


def test_select_subjects_that_are_all_the_exemplars_own_are_an_error(tiny_sd, concept_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: ScriptedJudge([]))
    with pytest.raises(UserError, match="select-subjects"):
        InversionRun(load_concept(concept_dir), load_backbone(str(tiny_sd)),
                     InversionConfig(**(LOOK | {"select_subjects": "Cube"})), tmp_path / "o")


def test_look_without_questions_off_the_toy_world_is_one_line(tiny_sd, concept_dir, tmp_path):
    toml = concept_dir / "concept.toml"
    toml.write_text(toml.read_text().replace('questions = ["Is the {target} melted?"]', ""))
    with pytest.raises(UserError, match=r"concept\.toml: --select-by look needs yes/no questions") as err:
        invert(concept_dir, tmp_path / "o", InversionConfig(**LOOK), model=str(tiny_sd), progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "o").exists()


def test_vqa_judge_is_the_mean_yes_probability_by_hand(tmp_path):
    """p(yes) / (p(yes) + p(no)) from BlipVqa's own log-likelihoods, averaged over two question templates."""
    from PIL import Image

    from lego_inversion.evaluation.models import BlipVqa

    model = tiny_models.build_blip2(tmp_path / "blip2", "t5")
    images = [Image.new("RGB", (32, 32), c) for c in ("red", "blue", "white")]
    subjects = ["ball", "star", "bear"]
    questions = ["Is the {target} melted?", "Does the {target} drip?"]
    vqa = BlipVqa(str(model))
    by_hand = [0.0] * 3
    for q in questions:
        for i, (yes, no) in enumerate(vqa.score(images, [q.replace("{target}", s) for s in subjects])):
            by_hand[i] += math.exp(yes) / (math.exp(yes) + math.exp(no)) / 2
    got = judges.vqa_judge(questions, str(model), "cpu")(images, subjects)
    assert got == pytest.approx(by_hand, rel=1e-6)
    assert max(got) - min(got) > 1e-6  # the images are told apart, so a constant could not pass


def test_oracle_judge_counts_clean_hits_by_hand():
    """Rendered toy-world scenes, read by the oracle, judged by the rules written out: the personalized look (and
    number) on the target subject without the exemplar's appearance."""
    from lego_inversion.toyworld.oracle import Oracle
    from lego_inversion.toyworld.render import Scene, render

    truth = {"subject": "cube", "appearance": "checkered", "concept": "melted", "variant": 1, "count": 1}
    scenes = [Scene("ball", "red", "melted", 1, seed=1), Scene("ball", "checkered", "melted", 1, seed=2),
              Scene("star", "blue", "melted", 0, seed=3), Scene("heart", "red", "melted", 1, seed=4),
              Scene("ball", "yellow", "none", 0, seed=5)]
    targets = ["ball", "ball", "star", "star", "ball"]
    images = [render(s) for s in scenes]
    preds = Oracle.load().predict(images)
    by_hand = [float(p["concept"] == "melted" and p["variant"] == 1 and p["subject"] == t
                     and p["appearance"] != "checkered") for p, t in zip(preds, targets)]
    assert 0 < sum(by_hand) < len(by_hand)
    assert judges.oracle_judge(truth)(images, targets) == by_hand
    # select_look_credit: the look without a clean hit scores the credit (here the checkered ball, read by hand)
    look = [float(p["concept"] == "melted" and p["variant"] == 1) for p in preds]
    credited = [c if c else 0.25 * k for c, k in zip(by_hand, look)]
    assert credited != by_hand
    assert judges.oracle_judge(truth, 0.25)(images, targets) == credited


def test_look_credit_is_checked_and_oracle_only(tmp_path):
    for bad in (-0.1, 1.5, True):
        with pytest.raises(UserError, match="select_look_credit"):
            InversionConfig(select_look_credit=bad)
    spec = type("Spec", (), {"toyworld": {}, "evaluation": {"questions": ["Is the {target} melted?"]}})()
    with pytest.raises(UserError, match=r"select_look_credit 0\.5 .*leave it 0"):
        judges.load_judge(spec, "some/sd-model", "blip", "cpu", "x/concept.toml", look_credit=0.5)


def _finished(folder: Path, score: float | None, by: str = "look"):
    """A finished run folder <concept>-<method>-s<seed> and its (concept folder, config, run folder) cell."""
    concept, method, seed = folder.name.rsplit("-", 2)
    folder.mkdir(parents=True)
    for name in ("learned_embeds.safetensors", "concept.json", "checkpoint.safetensors"):
        (folder / name).write_text(f"{folder.name} {name}")
    (folder / "validation").mkdir()
    (folder / "validation" / "step_000006.png").write_text("grid")
    if score is not None:
        (folder / "selection.json").write_text(json.dumps({"select_by": by, "step": 2, "score": score}))
    return folder.parent / "concepts" / concept, InversionConfig(method=method, seed=int(seed[1:])), folder


def test_keep_best_copies_the_best_seed_without_its_checkpoint(tmp_path):
    runs = [_finished(tmp_path / f"melted-lego-s{s}", v) for s, v in ((0, 0.25), (1, 0.75), (2, 0.75))]
    runs += [_finished(tmp_path / f"melted-ti-s{s}", v) for s, v in ((0, 0.5), (1, None))]  # s1 not finished
    runs += [_finished(tmp_path / f"frozen-lego-s{s}", 0.5, by="exemplars") for s in (0, 1)]
    runs += [_finished(tmp_path / "alone-lego-s0", 1.0)]
    assert keep_best(runs) == [tmp_path / "melted-lego-best"]
    best = tmp_path / "melted-lego-best"
    assert (best / "learned_embeds.safetensors").read_text() == "melted-lego-s1 learned_embeds.safetensors"
    assert (best / "validation" / "step_000006.png").is_file() and not (best / "checkpoint.safetensors").exists()
    record = json.loads((best / "best.json").read_text())
    assert record["chosen"] == "melted-lego-s1" and record["seed"] == 1  # the tie with s2 goes to the lower seed
    assert record["scores"]["melted-lego-s0"]["score"] == 0.25 and len(record["scores"]) == 3
    # run again after s0 improves: the copy is replaced
    (runs[0][2] / "selection.json").write_text(json.dumps({"select_by": "look", "step": 4, "score": 1.0}))
    keep_best(runs)
    assert json.loads((best / "best.json").read_text())["chosen"] == "melted-lego-s0"
    assert not list(tmp_path.glob(".melted-lego-best*"))


def test_lego_invert_keeps_the_best_toy_world_seed_judged_by_the_oracle(tmp_path):
    """End to end on the bundled toy model: two seeds, the oracle judges, the -best folder generates."""
    from lego_inversion.cli import main
    from lego_inversion.generation import load_generator

    out = tmp_path / "runs"
    assert main(["invert", str(EXAMPLES / "melted_cube"), "--seed", "0", "1", "--steps", "2", "--select-every", "1",
                 "--select-by", "look", "--select-subjects", "pyramid,heart", "--select-images", "1",
                 "--validation-steps", "2", "--out", str(out), "--no-progress"]) == 0
    scores = {s: json.loads((out / f"melted_cube-lego-s{s}" / "selection.json").read_text()) for s in (0, 1)}
    assert all(v["select_by"] == "look" and v["step"] in (0, 1, 2) and v["score"] in (0, 0.5, 1)
               for v in scores.values())
    record = json.loads((out / "melted_cube-lego-best" / "best.json").read_text())
    assert record["seed"] == max((0, 1), key=lambda s: (scores[s]["score"], -s))
    gen = load_generator(None, [out / "melted_cube-lego-best"])
    assert len(gen.generate([gen.expand_prompt("a photo of a ball that is {concept}")], [0],
                            num_inference_steps=1, progress=False)) == 1


def test_resumed_look_run_selects_as_an_uninterrupted_one(tiny_sd, concept_dir, tmp_path, monkeypatch):
    """The best look rows, score and step travel in the checkpoint (the judge here: the images' mean brightness,
    a pure function of the rows)."""
    import numpy as np

    bright = lambda images, subjects: [float(np.asarray(im, dtype=np.float64).mean()) for im in images]  # noqa: E731
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: bright)
    config = InversionConfig(**(LOOK | {"select_every": 1}))
    full = invert(concept_dir, tmp_path / "full", config, model=str(tiny_sd), progress=False)
    resumed = interrupted_and_resumed(concept_dir, tmp_path / "part", config, str(tiny_sd), monkeypatch)
    a, b = load_file(full / "learned_embeds.safetensors"), load_file(resumed / "learned_embeds.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((full / "selection.json").read_text()) == json.loads((resumed / "selection.json").read_text())


class RecordingJudge:
    """Scores 0 and keeps every batch of images it is shown."""

    def __init__(self):
        self.images = []

    def __call__(self, images, subjects):
        self.images.append(torch.as_tensor(np.asarray(images)).clone())
        return [0.0] * len(images)


def test_select_floor_draws_the_judged_images_as_generation_would(tiny_sd, concept_dir, tmp_path, monkeypatch):
    """A floor above every timestep draws exactly the concept-free prompts (a plain sample of them); floor 0 draws
    the concept prompts; a floor between gives images unlike both; the guidance choice draws at the floor too."""
    judge = RecordingJudge()
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: judge)
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    runs = {f: InversionRun(spec, backbone, InversionConfig(**(LOOK | {"select_floor": f, "select_steps": 3})),
                            tmp_path / str(f), alias=str(i)) for i, f in enumerate((0.0, 0.5, 0.9999))}
    drawn = {f: judge.images[i] for i, f in enumerate(runs)}  # each run scores its initial rows once, when built
    selector = runs[0.9999].selector
    assert selector.free == ["a photo of a sphere that is"] * 2 and selector.prompts != selector.free
    with torch.no_grad():
        free = np.asarray(backbone.sample(selector.free, selector.latents, num_inference_steps=3))
        concept = np.asarray(backbone.sample(selector.prompts, selector.latents, num_inference_steps=3))
    assert np.array_equal(drawn[0.9999].numpy(), free) and np.array_equal(drawn[0.0].numpy(), concept)
    assert not np.array_equal(free, concept)
    assert not np.array_equal(drawn[0.5].numpy(), free) and not np.array_equal(drawn[0.5].numpy(), concept)
    judge.images.clear()
    selector.guidance_scores(runs[0.9999], [1.0, 2.0])  # below the floor the concept term is 0 at every ratio
    assert len(judge.images) == 2 and torch.equal(judge.images[0], judge.images[1])


def test_select_floor_is_checked_and_needs_guidance(tiny_sd, concept_dir, tmp_path, monkeypatch):
    for bad in (1.0, -0.1, True):
        with pytest.raises(UserError, match="select_floor"):
            InversionConfig(select_floor=bad)
    assert InversionConfig().resolved({}).select_floor == 0.0
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: ScriptedJudge([]))
    backbone = load_backbone(str(tiny_sd))
    monkeypatch.setattr(backbone, "default_guidance_scale", 1.0)
    with pytest.raises(UserError, match=r"select_floor 0\.5 acts through classifier-free guidance") as err:
        InversionRun(load_concept(concept_dir), backbone, InversionConfig(**(LOOK | {"select_floor": 0.5})),
                     tmp_path / "o")
    assert "\n" not in str(err.value)
