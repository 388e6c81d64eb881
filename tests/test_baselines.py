"""DreamBooth-LoRA and Custom Diffusion as `lego invert` methods: same run folder, resume, files users load."""

import json

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from concept_fixtures import snapshot
from lego_inversion.backbones import load_backbone
from lego_inversion.config import InversionConfig
from lego_inversion.finetune import CUSTOM_DIFFUSION_FILE, LORA_FILE
from lego_inversion.generation import load_generator
from lego_inversion.trainer import invert

FAST = dict(steps=3, checkpoint_every=2, validation_steps=2, validation_images=1)
PROMPT = "a photo of a ball that is <melted>"


def _image(gen, seed=3):
    return torch.tensor(list(gen.generate([PROMPT], [seed], num_inference_steps=2)[0].getdata()), dtype=torch.float32)


@pytest.mark.parametrize("method, weights", [("dreambooth", LORA_FILE), ("custom-diffusion", CUSTOM_DIFFUSION_FILE)])
def test_finetune_methods_write_loadable_parts_and_leave_the_model_alone(tiny_sd, concept_dir, tmp_path, method,
                                                                        weights):
    backbone = load_backbone(str(tiny_sd))
    before = snapshot(backbone)
    run = invert(concept_dir, tmp_path / "run", InversionConfig(method=method, lora_rank=2, **FAST),
                 backbone=backbone, progress=False)
    for key, value in snapshot(backbone).items():  # base weights untouched, UNet parts removed after the run
        assert torch.equal(before[key], value), key
    assert not getattr(backbone.unet, "peft_config", None)
    assert {weights, "learned_embeds.safetensors", "concept.json", "config.json", "checkpoint.safetensors"} <= \
        {p.name for p in run.iterdir()}
    assert (run / "validation").is_dir() and (run / "diffusers").is_dir()
    learned = load_file(run / "learned_embeds.safetensors")["<melted>"]
    init = backbone.slots[0].init_vector("melted")
    assert torch.equal(learned, init) == (method == "dreambooth")  # DreamBooth's identifier stays fixed
    pipe = DiffusionPipeline.from_pretrained(str(tiny_sd))  # the files load in diffusers' own loaders
    if method == "dreambooth":
        pipe.load_lora_weights(str(run), weight_name=weights)
    else:
        pipe.unet.load_attn_procs(str(run), weight_name=weights, _pipeline=pipe)
    pipe.load_textual_inversion(str(run / "diffusers" / "melted.safetensors"))
    tuned, plain = load_generator(str(tiny_sd), [run]), load_generator(str(tiny_sd))
    plain.backbone.add_tokens(["<melted>"], [[learned]])
    assert not torch.equal(_image(tuned), _image(plain))  # the UNet parts change the image (same prompt, seed)


def test_finetune_run_resumes_bit_identically(tiny_sd, concept_dir, tmp_path):
    cfg = InversionConfig(method="custom-diffusion", steps=4, checkpoint_every=2, validation_steps=1,
                          validation_images=1)
    full = invert(concept_dir, tmp_path / "full", cfg, model=str(tiny_sd), progress=False)
    invert(concept_dir, tmp_path / "part", InversionConfig(**{**cfg.to_dict(), "steps": 2}), model=str(tiny_sd),
           progress=False)
    resumed = invert(concept_dir, tmp_path / "part", cfg, model=str(tiny_sd), resume=True, progress=False)
    a, b = load_file(full / CUSTOM_DIFFUSION_FILE), load_file(resumed / CUSTOM_DIFFUSION_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((resumed / "concept.json").read_text())["step"] == 4


def test_a_dreambooth_run_is_set_by_its_seed_not_by_the_global_generator(tiny_sd, concept_dir, tmp_path):
    """PEFT draws LoRA's A from torch's global generator: whatever ran before in the process (another global seed
    here) leaves the run's LoRA as it is, and another run seed changes it."""
    def lora(global_seed: int, seed: int, name: str) -> dict:
        torch.manual_seed(global_seed)
        run = invert(concept_dir, tmp_path / name, InversionConfig(method="dreambooth", lora_rank=2, seed=seed,
                                                                   **FAST), model=str(tiny_sd), progress=False)
        return load_file(run / LORA_FILE)

    a, b, other = lora(1, 0, "a"), lora(2, 0, "b"), lora(1, 1, "other")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], other[k]) for k in a)


def test_prior_preservation_generates_and_caches_class_images(tiny_sd, concept_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LEGO_CACHE", str(tmp_path / "cache"))
    cfg = InversionConfig(method="dreambooth", prior_preservation=True, class_images=2, **FAST)
    invert(concept_dir, tmp_path / "a", cfg, model=str(tiny_sd), progress=False)
    cached = sorted((tmp_path / "cache" / "class_images").rglob("*.png"))
    assert len(cached) == 2
    stamp = [p.stat().st_mtime_ns for p in cached]
    invert(concept_dir, tmp_path / "b", cfg, model=str(tiny_sd), progress=False)
    assert [p.stat().st_mtime_ns for p in cached] == stamp  # generated once, reused


def test_sweep_trains_finetune_runs_one_at_a_time(tiny_sd, concept_dir, tmp_path):
    from lego_inversion.sweep import invert_many

    folders = invert_many([concept_dir], ["lego", "dreambooth", "custom-diffusion"], [0], tmp_path / "s",
                          InversionConfig(**FAST), model=str(tiny_sd), progress=False)
    assert (folders[1] / LORA_FILE).is_file() and (folders[2] / CUSTOM_DIFFUSION_FILE).is_file()
    assert not any((folders[0] / f).exists() for f in (LORA_FILE, CUSTOM_DIFFUSION_FILE))


def test_export_writes_the_lora_for_the_other_tools(tiny_sd, concept_dir, tmp_path):
    from lego_inversion.formats import export, load_learned

    run = invert(concept_dir, tmp_path / "run", InversionConfig(method="dreambooth", lora_rank=2, **FAST),
                 model=str(tiny_sd), progress=False)
    written = export(load_learned(run), "kohya", str(tmp_path / "out") + "/")
    names = sorted(p.name for p in written)
    assert names == ["melted-lora.safetensors", "melted.safetensors"]
    pipe = DiffusionPipeline.from_pretrained(str(tiny_sd))  # diffusers reads the kohya layout too
    pipe.load_lora_weights(str(tmp_path / "out"), weight_name="melted-lora.safetensors")
    copied = export(load_learned(run), "diffusers", tmp_path / "d")
    assert LORA_FILE in {p.name for p in copied}


def test_reversion_steers_with_sampled_positives_and_caption_nouns(tiny_sd, concept_dir, tmp_path):
    from lego_inversion.baselines import STEER_POSITIVES, steer_negatives, steer_positives
    from lego_inversion.concept import load_concept
    from lego_inversion.losses import context_loss
    from lego_inversion.trainer import InversionRun

    backbone = load_backbone(str(tiny_sd))
    run = InversionRun(load_concept(concept_dir), backbone, InversionConfig(method="reversion", **FAST),
                       tmp_path / "o")
    assert run.config.timestep_skew == 0.5 and run.without_set is None  # relation-focal sampling, no <subj>
    assert "a photo of a cube that is <melted>" in str(run.with_set.captions[0])  # the subject in words
    assert steer_negatives(run) == ["photo", "cube"]
    pos, neg = run.context_sets[0][0][0], run.context_sets[0][1][0]
    assert pos.shape[0] == 3 and neg.shape[0] == 2  # the 3 positives of the fixture; the caption's 2 nouns
    state = run.generators["choices"].get_state()
    picked = steer_positives(run, run.context_sets)[0][0][0]
    run.generators["choices"].set_state(state)
    expected = torch.randperm(3, generator=run.generators["choices"])[:min(STEER_POSITIVES, 3)]
    torch.testing.assert_close(picked, pos[expected])
    run.generators["choices"].set_state(state)
    terms = run.losses()
    ctx_rows = backbone.slots[0].ext.rows(run.concept_ids[0])
    assert "loss_context" in terms and float(terms["loss_context"]) > 0
    assert float(context_loss(ctx_rows, [pos], [neg], 0.07)) > 0
    out = invert(concept_dir, tmp_path / "run", InversionConfig(method="reversion", **FAST), model=str(tiny_sd),
                 progress=False)
    assert json.loads((out / "config.json").read_text())["method"] == "reversion"
