"""Concept guidance (guidance.py): the hooked UNet's output against the two-term guidance computed by hand on every
backbone, the pipelines' [unconditional; conditional] order it relies on, generation's switch, and its errors."""

import json
import shutil

import numpy as np
import pytest
import torch

from lego_inversion.backbones import load_backbone
from lego_inversion.cli import main
from lego_inversion.errors import UserError
from lego_inversion.generation import load_generator
from lego_inversion.guidance import concept_free_prompts, concept_guidance

BEAR = "a photo of a bear that is {frozen}"


@pytest.fixture(scope="module")
def backbones(tiny_sd, tmp_path_factory):
    from lego_inversion.testing import build_tiny_ldm, build_tiny_sdxl

    root = tmp_path_factory.mktemp("guidance-models")
    return {"sd": str(tiny_sd), "sdxl": str(build_tiny_sdxl(root / "sdxl")), "ldm": str(build_tiny_ldm(root / "ldm"))}


def test_concept_free_prompts_drop_every_concept_token_and_tidy_the_spaces():
    tokens = ["<melted>", "<melted_1>", "<ice>"]
    assert concept_free_prompts(["a <melted> <melted_1> ball", "a <ice>-covered bear", "a cat"], tokens) == \
        ["a ball", "a -covered bear", "a cat"]
    assert concept_free_prompts(["a <melted> ball"], []) == ["a <melted> ball"]


def _call_kwargs(backbone, cond: dict, batch: int) -> dict:
    """The UNet kwargs of a pipeline's guided call (SDXL nests text_embeds and time_ids in added_cond_kwargs)."""
    kwargs = {"encoder_hidden_states": cond["encoder_hidden_states"]}
    if "text_embeds" in cond:
        side = backbone.resolution
        kwargs["added_cond_kwargs"] = {"text_embeds": cond["text_embeds"],
                                       "time_ids": backbone.time_ids(side, side, 2 * batch)}
    return kwargs


def _eps(backbone, sample, t, kwargs):
    return backbone.unet(sample, t, **kwargs).sample


@pytest.mark.parametrize("kind", ["sd", "sdxl", "ldm"])
def test_the_hooked_call_gives_the_two_term_guidance_computed_by_hand(backbones, kind):
    """eps(∅) + s(eps(p∖c) − eps(∅)) + s_c(eps(p) − eps(p∖c)), from three plain UNet calls, equals the pipeline's
    guidance step applied to the hooked call's output; the unconditional half is left alone."""
    backbone = load_backbone(backbones[kind])
    # a row unlike any word, so the concept term is not small
    backbone.add_tokens(["<melted>"], [[3.0 * slot.init_vector("melted") for slot in backbone.slots]])
    prompts = ["a photo of a <melted> ball", "a <melted> red cube"]
    free = concept_free_prompts(prompts, ["<melted>"])
    assert free == ["a photo of a ball", "a red cube"]
    with torch.no_grad():
        enc = {name: backbone.encode_text(backbone.tokenize(p)) for name, p in
               [("uncond", ["", ""]), ("cond", prompts), ("free", free)]}
    both = {k: torch.cat([enc["uncond"][k], enc["cond"][k]]) for k in enc["cond"]}
    sample = torch.randn(backbone.latent_shape(4, backbone.resolution), generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    s, s_c = 3.0, 7.0
    with torch.no_grad():
        plain = _eps(backbone, sample, t, _call_kwargs(backbone, both, 2))
        eps_u, eps_c = plain[:2], plain[2:]
        free_kwargs = _call_kwargs(backbone, enc["free"], 1)
        eps_s = _eps(backbone, sample[2:], t, free_kwargs)
        expected = eps_u + s * (eps_s - eps_u) + s_c * (eps_c - eps_s)
        with concept_guidance(backbone, free, s, s_c):
            hooked = _eps(backbone, sample, t, _call_kwargs(backbone, both, 2))
    assert torch.equal(hooked[:2], eps_u)
    guided = hooked[:2] + s * (hooked[2:] - hooked[:2])
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-5)
    assert (eps_c - eps_s).abs().max() > 1e-3  # the concept term is there to be scaled
    with torch.no_grad():  # the hook is gone after the block
        assert torch.equal(_eps(backbone, sample, t, _call_kwargs(backbone, both, 2)), plain)


@pytest.mark.parametrize("kind", ["sd", "sdxl", "ldm"])
def test_each_pipeline_guides_with_the_unconditional_half_first(backbones, kind):
    """The hook rewrites the second half of the pipeline's UNet batch: check that it is the prompts' conditioning."""
    backbone = load_backbone(backbones[kind])
    prompts = ["a photo of a ball", "a red cube"]
    with torch.no_grad():
        cond = backbone.encode_text(backbone.tokenize(prompts))["encoder_hidden_states"]
    seen = []
    handle = backbone.unet.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(kwargs.get("encoder_hidden_states", args[2] if len(args) > 2
                                                            else None)), with_kwargs=True)
    try:
        latents = torch.randn(backbone.latent_shape(2, backbone.resolution))
        backbone.pipe.set_progress_bar_config(disable=True)
        backbone.sample(prompts, latents, num_inference_steps=1, guidance_scale=3.0)
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].shape[0] == 4
    torch.testing.assert_close(seen[0][2:].float(), cond.float(), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def gen(tiny_sd, melted_run, frozen_run):
    return load_generator(str(tiny_sd), [melted_run, frozen_run])


def _image(gen, prompt=BEAR, **kw):
    return np.asarray(gen.generate([prompt], seeds=[3], num_inference_steps=2, progress=False, guidance_scale=3.0,
                                   **kw)[0], dtype=np.int16)


def test_generation_guides_the_concept_only_when_asked(gen):
    """Same prompt and seed: at the guidance scale it is the pipeline's own guidance (the same image); at another
    scale the image changes; a prompt without concept tokens is its own concept-free prompt."""
    plain = _image(gen)
    assert gen.backbone.default_concept_guidance_scale is None
    assert np.array_equal(_image(gen, concept_guidance_scale=3.0), plain)
    assert not np.array_equal(_image(gen, concept_guidance_scale=8.0), plain)
    word = "a photo of a bear that is frozen"
    assert np.abs(_image(gen, word, concept_guidance_scale=8.0) - _image(gen, word)).max() <= 1


@pytest.mark.parametrize("key,value,bad", [("concept_guidance_scale", 8.0, ["strong"]),
                                           ("concept_floor", 0.4, [1.0, -0.1, "late"])])
def test_a_model_folder_sets_the_default(tiny_sd, melted_run, tmp_path, key, value, bad):
    """A model folder's lego_inversion.json key is generation's default: the same image as passing the value."""
    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    (model / "lego_inversion.json").write_text(json.dumps({"guidance_scale": 3.0, key: value}))
    with_default = load_generator(str(model), [melted_run])
    plain = load_generator(str(tiny_sd), [melted_run])
    prompt = "a photo of a {melted} bear"
    assert getattr(with_default.backbone, f"default_{key}") == value
    assert np.array_equal(_image(with_default, prompt), _image(plain, prompt, **{key: value}))
    assert not np.array_equal(_image(with_default, prompt), _image(plain, prompt))
    for wrong in bad:
        (model / "lego_inversion.json").write_text(json.dumps({key: wrong}))
        with pytest.raises(UserError, match=rf"lego_inversion\.json: {key}"):
            load_backbone(str(model))


def test_concept_guidance_is_refused_where_it_cannot_act(gen, tiny_sd):
    with pytest.raises(UserError, match="guidance scale 1"):
        gen.generate([BEAR], seeds=[0], guidance_scale=1.0, concept_guidance_scale=5.0, progress=False)
    with pytest.raises(UserError, match="must be >= 0"):
        gen.generate([BEAR], seeds=[0], guidance_scale=3.0, concept_guidance_scale=-1.0, progress=False)
    with pytest.raises(UserError, match="load one with --concept"):
        load_generator(str(tiny_sd), []).generate(["a bear"], seeds=[0], concept_guidance_scale=5.0, progress=False)
    with pytest.raises(UserError, match="--attend-and-excite"):
        gen.generate([BEAR], seeds=[0], guidance_scale=3.0, concept_guidance_scale=5.0, excite=["bear"],
                     progress=False)


def test_lego_generate_refuses_it_in_one_line_and_writes_nothing(tiny_sd, melted_run, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--concept", str(melted_run), "--prompt", "a {melted} bear", "--out", str(out),
                 "--model", str(tiny_sd), "--guidance-scale", "1", "--concept-guidance-scale", "5",
                 "--steps", "1", "--num-images", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--concept-guidance-scale" in err[0] and "Traceback" not in err[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("kind", ["sd", "sdxl", "ldm"])
def test_below_the_floor_the_conditional_half_is_the_concept_free_prompt(backbones, kind):
    """With floor f, a step at t < f·T returns eps(∅) and eps(p∖c) (the prompt without the concept tokens, by a
    plain UNet call on that prompt), and at t >= f·T the two-term guidance as without a floor, at s_c 1 and 7."""
    backbone = load_backbone(backbones[kind])
    backbone.add_tokens(["<melted>"], [[3.0 * slot.init_vector("melted") for slot in backbone.slots]])
    prompts = ["a photo of a <melted> ball", "a <melted> red cube"]
    free = concept_free_prompts(prompts, ["<melted>"])
    with torch.no_grad():
        enc = {name: backbone.encode_text(backbone.tokenize(p)) for name, p in
               [("uncond", ["", ""]), ("cond", prompts), ("free", free)]}
    both = {k: torch.cat([enc["uncond"][k], enc["cond"][k]]) for k in enc["cond"]}
    sample = torch.randn(backbone.latent_shape(4, backbone.resolution), generator=torch.Generator().manual_seed(1))
    low, high = torch.tensor(249), torch.tensor(250)  # the floor 0.25 of 1000 training timesteps lies between
    with torch.no_grad():
        eps_u = _eps(backbone, sample[:2], low, _call_kwargs(backbone, enc["uncond"], 1))
        eps_s = _eps(backbone, sample[2:], low, _call_kwargs(backbone, enc["free"], 1))
        calls = []
        counter = backbone.unet.register_forward_pre_hook(lambda *a: calls.append(1))
        for s_c in (3.0, 7.0):
            with concept_guidance(backbone, free, 3.0, s_c, floor=0.25):
                calls.clear()
                hooked_low = _eps(backbone, sample, low, _call_kwargs(backbone, both, 2))
                assert len(calls) == 1  # below the floor: no extra pass
                hooked_high = _eps(backbone, sample, high, _call_kwargs(backbone, both, 2))
            with concept_guidance(backbone, free, 3.0, s_c):
                unfloored_high = _eps(backbone, sample, high, _call_kwargs(backbone, both, 2))
            torch.testing.assert_close(hooked_low, torch.cat([eps_u, eps_s]), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(hooked_high, unfloored_high, rtol=1e-4, atol=1e-5)
        counter.remove()
        plain_low = _eps(backbone, sample, low, _call_kwargs(backbone, both, 2))
    assert (plain_low[2:] - eps_s).abs().max() > 1e-3  # the concept changes the step the floor takes it out of


def _timesteps(gen, steps=2):
    gen.backbone.pipe.scheduler.set_timesteps(steps)
    return [int(t) for t in gen.backbone.pipe.scheduler.timesteps]


def test_generation_leaves_the_concept_out_below_the_floor(gen):
    """Same prompt and seed: floor 0 is plain generation; a floor above every sampled timestep draws the concept-free
    prompt itself (computed by hand: the prompt with the concept token taken out, generated plainly); a floor between
    the timesteps differs from both."""
    top, bottom = max(_timesteps(gen)), min(_timesteps(gen))
    plain = _image(gen)
    free_prompt = concept_free_prompts([gen.expand_prompt(BEAR)], gen.concept_tokens)[0]
    assert free_prompt != gen.expand_prompt(BEAR)
    assert gen.backbone.default_concept_floor == 0.0
    assert np.array_equal(_image(gen, concept_floor=0.0), plain)
    assert np.array_equal(_image(gen, concept_floor=(top + 1) / 1000), _image(gen, free_prompt))
    between = _image(gen, concept_floor=(bottom + top) / 2000)
    assert not np.array_equal(between, plain) and not np.array_equal(between, _image(gen, free_prompt))


def test_the_floor_is_refused_where_it_cannot_act(gen, tiny_sd):
    with pytest.raises(UserError, match="guidance scale 1"):
        gen.generate([BEAR], seeds=[0], guidance_scale=1.0, concept_floor=0.5, progress=False)
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        gen.generate([BEAR], seeds=[0], guidance_scale=3.0, concept_floor=1.0, progress=False)
    with pytest.raises(UserError, match="load one with --concept"):
        load_generator(str(tiny_sd), []).generate(["a bear"], seeds=[0], concept_floor=0.5, progress=False)
    with pytest.raises(UserError, match="--attend-and-excite"):
        gen.generate([BEAR], seeds=[0], guidance_scale=3.0, concept_floor=0.5, excite=["bear"], progress=False)


def test_lego_generate_refuses_a_bad_floor_in_one_line(tiny_sd, melted_run, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--concept", str(melted_run), "--prompt", "a {melted} bear", "--out", str(out),
                 "--model", str(tiny_sd), "--concept-floor", "2", "--steps", "1", "--num-images", "1",
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--concept-floor" in err[0] and "Traceback" not in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_splice_replaces_the_conditional_half_or_declines_when_the_shapes_differ():
    """_splice puts the concept-free rows in the second half (positional or keyword, SDXL's nested text_embeds) and
    returns None where the sequence lengths differ, so the hook falls back to the extra pass."""
    from lego_inversion.guidance import _splice

    full = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(4, 3, 2)
    free = {"encoder_hidden_states": -torch.ones(2, 3, 2), "text_embeds": -torch.ones(2, 5)}
    kwargs = {"added_cond_kwargs": {"text_embeds": torch.zeros(4, 5), "time_ids": torch.ones(4, 6)}}
    args, out = _splice(("x", "t", full), kwargs, free, slice(2, None))
    assert torch.equal(args[2][:2], full[:2]) and torch.equal(args[2][2:], free["encoder_hidden_states"])
    assert torch.equal(out["added_cond_kwargs"]["text_embeds"][2:], free["text_embeds"])
    assert torch.equal(out["added_cond_kwargs"]["time_ids"], kwargs["added_cond_kwargs"]["time_ids"])
    assert torch.equal(kwargs["added_cond_kwargs"]["text_embeds"], torch.zeros(4, 5))  # the caller's dict untouched
    longer = {"encoder_hidden_states": -torch.ones(2, 7, 2)}
    assert _splice((), {"encoder_hidden_states": full}, longer, slice(2, None)) is None
