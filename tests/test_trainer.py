"""The trainer: frozen model, every method, gradient routing, resume, crash safety, input checks."""

import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from concept_fixtures import CONCEPT_TOML, make_concept, snapshot
from lego_inversion.backbones import load_backbone
from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.loop import encode_groups
from lego_inversion.trainer import InversionRun, invert

FAST = dict(steps=3, checkpoint_every=2, validation_steps=2, validation_images=2)


def test_only_new_rows_change(tiny_sd, concept_dir, tmp_path):
    backbone = load_backbone(str(tiny_sd))
    before = snapshot(backbone)
    original_rows = backbone.slots[0].base_table.detach().clone()
    run = invert(concept_dir, tmp_path / "run", InversionConfig(**FAST), backbone=backbone, progress=False)
    after = snapshot(backbone)
    assert before.keys() == after.keys() and len(before) > 50
    for key in before:
        assert torch.equal(before[key], after[key]), f"{key} changed"
    assert torch.equal(original_rows, backbone.slots[0].base_table)
    learned = load_file(run / "learned_embeds.safetensors")
    init = backbone.slots[0].init_vector("melted")
    assert not torch.allclose(learned["<melted>"], init), "the concept row was not optimised"


@pytest.mark.parametrize("method, has_subject, terms", [
    ("lego", True, {"loss", "loss_concept", "loss_subject", "loss_context"}),
    ("ss-only", True, {"loss", "loss_concept", "loss_subject"}),
    ("cl-only", False, {"loss", "loss_concept", "loss_context"}),
    ("ti", False, {"loss", "loss_concept"}),
])
def test_methods_are_one_code_path(tiny_sd, concept_dir, tmp_path, method, has_subject, terms):
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    run = InversionRun(spec, backbone, InversionConfig(method=method, **FAST), tmp_path / "out")
    assert set(run.losses()) == terms
    expected_caption = "a photo of a <subj> that is <melted>" if has_subject else "a photo of a cube that is <melted>"
    assert run.with_set.captions[0] == [expected_caption]
    assert (run.without_set is not None) == has_subject
    assert len(run.optimizer.param_groups[0]["params"]) == 1  # only the new rows
    assert run.optimizer.param_groups[0]["params"][0].shape[0] == (2 if has_subject else 1)
    total = run.losses()
    weight = run.config.context_weight
    total_expected = total["loss_concept"] + total.get("loss_subject", 0) + weight * total.get("loss_context", 0)
    assert float(total["loss"]) == pytest.approx(float(total_expected), rel=1e-5)


@pytest.mark.parametrize("subject_from_with", [True, False])
def test_subject_gradient_from_with_images_is_optional(tiny_sd, concept_dir, tmp_path, subject_from_with):
    backbone = load_backbone(str(tiny_sd))
    run = InversionRun(load_concept(concept_dir), backbone,
                       InversionConfig(subject_from_with=subject_from_with, **FAST), tmp_path / "o")
    run.losses()["loss_concept"].backward()
    grad = run.params["rows/text_encoder"].grad
    subj, cpt = grad[0], grad[1]
    assert cpt.abs().sum() > 0
    assert (subj.abs().sum() > 0) == subject_from_with


@pytest.mark.parametrize("how", ["ctrl-c", "exception mid-step"])
def test_resume_after_interrupt_equals_uninterrupted(tiny_sd, concept_dir, tmp_path, monkeypatch, how):
    """Ctrl-C (SIGINT) finishes the step and checkpoints at its boundary; an exception mid-step leaves the last
    periodic checkpoint. Either way the resumed run ends bit-identical to the uninterrupted one."""
    config = InversionConfig(steps=6, checkpoint_every=2, validation_steps=2, validation_images=1)
    full = invert(concept_dir, tmp_path / "full", config, model=str(tiny_sd), progress=False)

    original = InversionRun.draw

    def interrupted(self):
        if self.step == 3:
            if how == "ctrl-c":
                os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step, after nothing of step 4 was drawn yet
            else:
                raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(InversionRun, "draw", interrupted)
    with pytest.raises(KeyboardInterrupt):
        invert(concept_dir, tmp_path / "part", config, model=str(tiny_sd), progress=False)
    assert not (tmp_path / "part" / "learned_embeds.safetensors").exists()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "part" / "checkpoint.safetensors"), "pt") as fh:
        step = json.loads(fh.metadata()["lego_checkpoint"])["step"]
    assert step == (4 if how == "ctrl-c" else 2)
    monkeypatch.setattr(InversionRun, "draw", original)
    with pytest.raises(UserError, match="--resume"):
        invert(concept_dir, tmp_path / "part", config, model=str(tiny_sd), progress=False)
    resumed = invert(concept_dir, tmp_path / "part", config, model=str(tiny_sd), resume=True, progress=False)
    a, b = load_file(full / "learned_embeds.safetensors"), load_file(resumed / "learned_embeds.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(UserError, match="learning_rate"):
        invert(concept_dir, tmp_path / "part", InversionConfig(steps=6, learning_rate=1.0), model=str(tiny_sd),
               resume=True, progress=False)


def test_resume_refuses_another_concept_folder(tiny_sd, concept_dir, tmp_path, caplog):
    out = invert(concept_dir, tmp_path / "run", InversionConfig(**FAST), model=str(tiny_sd), progress=False)
    other = make_concept(tmp_path / "other", CONCEPT_TOML.replace('"dripping"', '"liquid"'))
    before = (out / "concept.json").read_text()
    with pytest.raises(UserError, match="resume it with its own concept folder"):
        invert(other, out, InversionConfig(**FAST), model=str(tiny_sd), resume=True, progress=False)
    assert (out / "concept.json").read_text() == before  # nothing rewritten
    with caplog.at_level("WARNING"):
        invert(concept_dir, tmp_path / "new", InversionConfig(**FAST), model=str(tiny_sd), resume=True,
               progress=False)
    assert "holds no run to resume" in caplog.text


def test_resume_a_run_saved_before_newer_settings_existed(tiny_sd, concept_dir, tmp_path):
    """A config.json without a setting added later (here the Min-SNR and timestep-floor levers) resumes: the
    missing field means its default, which is what the run used; another value for it is still refused."""
    out = invert(concept_dir, tmp_path / "run", InversionConfig(**(FAST | {"steps": 2})), model=str(tiny_sd),
                 progress=False)
    saved = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({k: v for k, v in saved.items()
                                                 if k not in ("snr_gamma", "timestep_min")}))
    invert(concept_dir, out, InversionConfig(**(FAST | {"steps": 3})), model=str(tiny_sd), resume=True,
           progress=False)
    assert json.loads((out / "concept.json").read_text())["step"] == 3
    with pytest.raises(UserError, match="snr_gamma"):
        invert(concept_dir, out, InversionConfig(**(FAST | {"steps": 4, "snr_gamma": 5.0})), model=str(tiny_sd),
               resume=True, progress=False)


def test_kill_minus_nine_loses_at_most_one_checkpoint_interval(tiny_sd, concept_dir, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "lego_inversion", "invert", str(concept_dir), "--out", str(out), "--model",
           str(tiny_sd), "--steps", "400", "--checkpoint-every", "2", "--no-progress", "--validation-steps", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"CI": "1"})
    ckpt = out / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.05)
    time.sleep(0.3)  # a few checkpoint writes later, at an arbitrary point (possibly mid-write)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint written within 120 s"
    from safetensors import safe_open

    with safe_open(str(ckpt), "pt") as fh:  # the checkpoint on disk is complete and readable
        step = json.loads(fh.metadata()["lego_checkpoint"])["step"]
    assert 2 <= step < 400 and step % 2 == 0  # killed mid-training, not after it
    config = json.loads((out / "config.json").read_text())
    config["steps"] = step + 2
    resumed = invert(concept_dir, out, InversionConfig.from_dict(config), model=str(tiny_sd), resume=True,
                     progress=False)
    assert json.loads((resumed / "concept.json").read_text())["step"] == step + 2


def test_token_already_in_vocabulary_writes_nothing(tiny_sd, tmp_path):
    concept = make_concept(tmp_path / "c", CONCEPT_TOML.replace('token = "<melted>"', 'token = "cube"'))
    with pytest.raises(UserError, match="'cube' already exists"):
        invert(concept, tmp_path / "out", InversionConfig(**FAST), model=str(tiny_sd), progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_context_words_are_suggested_and_recorded(tiny_sd, tmp_path):
    """A [[concept]] table without positives/negatives gets WordNet's words, ranked in the model's own table
    (lexicon.suggest_for_backbone, tested in test_lexicon.py); concept.json records them and which were proposed."""
    from lego_inversion.lexicon import suggest_for_backbone

    toml = CONCEPT_TOML.replace('positives = ["melted", "molten", "dripping"]', "")
    out = invert(make_concept(tmp_path / "c", toml), tmp_path / "out", InversionConfig(**FAST),
                 model=str(tiny_sd), progress=False)
    words = json.loads((out / "concept.json").read_text())["context_words"]["<melted>"]
    expected = suggest_for_backbone("melted", load_backbone(str(tiny_sd)))
    assert words["positives"] == expected.positives and len(words["positives"]) > 0
    assert words["negatives"] == ["solid", "intact", "frozen"] and words["suggested"] == ["positives"]
    unknown = CONCEPT_TOML.replace('positives = ["melted", "molten", "dripping"]', "").replace(
        'init = "melted"', 'init = "xqzwv"')
    with pytest.raises(UserError, match=r"concept\[0\] has no positives and none can be proposed"):
        invert(make_concept(tmp_path / "u", unknown), tmp_path / "out2", InversionConfig(**FAST),
               model=str(tiny_sd), progress=False)
    assert not (tmp_path / "out2").exists()


def test_bad_concept_folder_fails_before_loading_the_model(tmp_path):
    concept = make_concept(tmp_path / "c", CONCEPT_TOML.replace("{subject} that", "thing that"))
    with pytest.raises(UserError, match="must contain"):
        invert(concept, tmp_path / "out", InversionConfig(**FAST), model="/nonexistent", progress=False)
    assert not (tmp_path / "out").exists()


def test_word_the_tokenizer_cannot_embed_writes_nothing(tmp_path):
    from lego_inversion.testing import build_tiny_ldm

    model = build_tiny_ldm(tmp_path / "ldm")  # a BERT word-piece vocabulary: non-ASCII words map to [UNK]
    concept = make_concept(tmp_path / "c", CONCEPT_TOML.replace('"dripping"]', '"溶けた"]'))
    with pytest.raises(UserError, match=r"concept\[0\]\.positives: the tokenizer cannot embed '溶けた'"):
        invert(concept, tmp_path / "out", InversionConfig(**FAST), model=str(model), progress=False)
    assert not (tmp_path / "out").exists()


def test_distinct_captions_are_encoded_once_with_the_same_result(tiny_sd, concept_dir, tmp_path):
    backbone = load_backbone(str(tiny_sd))
    run = InversionRun(load_concept(concept_dir), backbone, InversionConfig(**FAST), tmp_path / "o")
    assert run.with_set.ids[0].shape[0] == 1 and run.with_set.caption_index.tolist() == [[0], [0]]
    backbone.slots[0].encoder.double()  # float64, so that "equal" means equal, not "equal up to rounding"
    run.params["rows/text_encoder"].data = run.params["rows/text_encoder"].data.double()
    captions = torch.tensor([0, 0, 0])
    calls = []
    original = backbone.encode_text
    backbone.encode_text = lambda ids, frozen=None: calls.append(ids[0].shape[0]) or original(ids, frozen)
    deduplicated = encode_groups(backbone, [(run.without_set, captions[:1]), (run.with_set, captions)])
    backbone.encode_text = original
    assert calls == [2]  # two distinct captions for four samples
    rows = [run.without_set.ids[0][[0]], run.with_set.ids[0][[0, 0, 0]]]
    direct = backbone.encode_text([torch.cat(rows)])
    torch.testing.assert_close(deduplicated["encoder_hidden_states"], direct["encoder_hidden_states"])
    grads = []
    for cond in (deduplicated, direct):
        run.params["rows/text_encoder"].grad = None
        cond["encoder_hidden_states"].square().sum().backward()
        grads.append(run.params["rows/text_encoder"].grad.clone())
    relative = (grads[0] - grads[1]).norm() / grads[1].norm()
    assert relative < 1e-9, relative


def test_learning_rate_defaults_to_the_models_and_is_recorded(tiny_sd, concept_dir, tmp_path):
    """learning_rate=None takes the backbone's default (5e-3 for CLIP models) or the model folder's
    lego_inversion.json value; config.json records the value used, and --resume accepts None again."""
    import shutil

    out = invert(concept_dir, tmp_path / "a", InversionConfig(**FAST), model=str(tiny_sd), progress=False)
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 5e-3
    model = shutil.copytree(tiny_sd, tmp_path / "model")
    (model / "lego_inversion.json").write_text(json.dumps({"learning_rate": 0.02}))
    out = invert(concept_dir, tmp_path / "b", InversionConfig(**FAST), model=str(model), progress=False)
    assert json.loads((out / "config.json").read_text())["learning_rate"] == 0.02
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint.safetensors"), "pt") as fh:  # what the optimizer actually used
        groups = json.loads(fh.metadata()["lego_checkpoint"])["param_groups"]
    assert [g["lr"] for g in groups] == [0.02]
    longer = InversionConfig(**FAST | {"steps": 4})
    invert(concept_dir, out, longer, model=str(model), resume=True, progress=False)
    (model / "lego_inversion.json").write_text(json.dumps({"learning_rate": 0.03}))
    with pytest.raises(UserError, match="learning_rate"):  # the model's default changed under the run
        invert(concept_dir, out, InversionConfig(**FAST | {"steps": 5}), model=str(model), resume=True,
               progress=False)


@pytest.mark.parametrize(("config_text", "expected"), [
    (None, "config.json: missing; not a lego invert run; choose a new --out"),
    ("{truncated", "config.json: not valid JSON ("),
])
def test_resume_into_a_folder_that_is_not_a_run(tiny_sd, concept_dir, tmp_path, config_text, expected):
    out = tmp_path / "other"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    if config_text is not None:
        (out / "config.json").write_text(config_text, encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(expected)):
        invert(concept_dir, out, InversionConfig(**FAST), model=str(tiny_sd), resume=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(["notes.txt"] + (["config.json"] if config_text else []))
