"""Attend-and-Excite (Chefer et al. 2023) on every backbone: the loss by hand, the recorded maps, the latent update
inside the pipelines' own loops (tiny SD, SDXL, LDM and the embedded toy model), restoring, and `lego generate`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lego_inversion.attend_excite import (ExciteSettings, attend_and_excite, excite_loss, record_cross_attention,
                                          token_maxima)
from lego_inversion.errors import UserError
from lego_inversion.generation import load_generator

PROMPT = "a photo of a ball that is melted"


def pixels(images) -> list[np.ndarray]:
    return [np.asarray(im, dtype=np.int16) for im in images]


def processors(backbone) -> dict:
    return dict(backbone.unet.attn_processors)


def hand_loss(maps: np.ndarray, positions: list[int], sigma: float) -> float:
    """Chefer et al.: softmax(100·A[..., 1:-1]) over tokens, 3×3 kernel exp(-(d/2σ)²) with reflect padding,
    L = max_s (1 - max G(A^s)); written with loops, independently of the module."""
    h, w = maps.shape[:2]
    text = np.exp(100 * maps[..., 1:-1].astype(np.float64))
    text /= text.sum(-1, keepdims=True)
    g = np.array([math.exp(-((d / (2 * sigma)) ** 2)) for d in (-1, 0, 1)])
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    losses = []
    for p in positions:
        image = text[..., p - 1]
        reflect = lambda i, size: -i if i < 0 else (2 * (size - 1) - i if i >= size else i)  # noqa: E731
        smooth = np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                smooth[i, j] = sum(kernel[a + 1, b + 1] * image[reflect(i + a, h), reflect(j + b, w)]
                                   for a in (-1, 0, 1) for b in (-1, 0, 1))
        losses.append(max(0.0, 1.0 - smooth.max()))
    return max(losses)


def test_loss_matches_hand_computation():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 5, 7, generator=gen) * 0.05
    maps[1, 2, 3] += 0.04  # one token with a peak, so that the smoothing matters
    maps = maps / maps.sum(-1, keepdim=True)
    for positions in ([3], [2, 5], [1, 3, 5]):
        got = excite_loss(token_maxima(maps, positions, ExciteSettings())).item()
        assert got == pytest.approx(hand_loss(maps.numpy(), positions, 0.5), abs=1e-6)
    # without smoothing: the plain maximum of the renormalised map
    text = (maps[..., 1:-1] * 100).softmax(-1)
    got = excite_loss(token_maxima(maps, [3], ExciteSettings(smooth=False))).item()
    assert got == pytest.approx(1 - text[..., 2].max().item(), abs=1e-6)


def test_settings_and_step_sizes():
    s = ExciteSettings()
    assert (s.max_step, dict(s.thresholds), s.max_refinement, s.scale_factor) == (25, {0: 0.05, 10: 0.5, 20: 0.8}, 20,
                                                                                   20.0)
    alphas = s.step_sizes(50)
    assert alphas[0] == pytest.approx(20.0) and alphas[-1] == pytest.approx(20 * math.sqrt(0.5))
    assert json.loads(json.dumps(s.to_json()))["thresholds"] == {"0": 0.05, "10": 0.5, "20": 0.8}
    with pytest.raises(UserError):
        ExciteSettings(kernel_size=2)


@pytest.fixture(scope="module")
def sd(tiny_sd):
    return load_generator(str(tiny_sd), device="cpu")


def test_token_positions_and_unknown_word(sd):
    gen = sd
    [pos] = gen.excite_positions([PROMPT], ["ball", "melted"])
    ids = gen.backbone.slots[0].tokenize([PROMPT])[0].tolist()
    tok = gen.backbone.slots[0].tokenizer
    assert [tok.convert_ids_to_tokens(ids[p]) for p in pos] == ["ball</w>", "melted</w>"]
    with pytest.raises(UserError, match=r"^--attend-and-excite 'cube': not a word of the prompt"):
        gen.excite_positions([PROMPT], ["cube"])


def test_placeholder_maps_to_concept_tokens(tiny_sd, melted_run):
    gen = load_generator(str(tiny_sd), [melted_run], device="cpu")
    prompt = "a photo of a ball that is {melted}"
    [pos] = gen.excite_positions([prompt], ["{melted}"])
    [same] = gen.excite_positions([prompt], ["<melted>"])
    ids = gen.backbone.slots[0].tokenize([gen.expand_prompt(prompt)])[0].tolist()
    assert pos == same and [ids[p] for p in pos] == gen.backbone.token_ids(["<melted>"])[0]


def test_recorded_maps_are_distributions_of_the_conditional_half(sd):
    lat = sd.initial_latents([0, 1])
    plain = pixels(sd.backbone.sample([PROMPT, "a cube"], lat, num_inference_steps=2))
    with record_cross_attention(sd.backbone, batch=2, latent_shape=lat.shape) as store:
        recorded = pixels(sd.backbone.sample([PROMPT, "a cube"], lat, num_inference_steps=2))  # CFG: batch of 4
    heads = sd.backbone.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.heads
    assert len(store.maps) == 2 * len(store.layers) and len(store.layers) >= 2
    for m in store.maps:
        assert m.shape == (2, heads, 8 * 8, 77)
        torch.testing.assert_close(m.sum(-1), torch.ones(2, heads, 64))
    assert all(np.array_equal(a, b) for a, b in zip(plain, recorded))  # recording changes nothing
    assert store.aggregate().shape == (2, 8, 8, 77)


def run(gen, words, settings, steps, seeds=(0, 1), prompt=PROMPT):
    images = gen.generate([prompt] * len(seeds), list(seeds), num_inference_steps=steps, progress=False,
                          excite=words, excite_settings=settings)
    return pixels(images), [e for chunk in gen.excite_log for e in chunk]


def attention(log, step):
    """The excited token's smoothed maximum attention per image at `step` (before that step's update)."""
    return np.array([1 - x for x in next(e for e in log if e["step"] == step)["loss"]])


def test_excite_raises_attention_changes_images_and_restores_tiny_sd(sd):
    before = processors(sd.backbone)
    plain = pixels(sd.generate([PROMPT] * 2, [0, 1], num_inference_steps=4, progress=False))
    # "no flag" with the same hooks: α = 0 leaves the latents alone (the images equal the plain run) and logs
    # the attention the plain run has at each step
    probe, base = run(sd, ["melted"], ExciteSettings(scale_factor=0, max_refinement=0), 4)
    assert all(np.array_equal(a, b) for a, b in zip(plain, probe))
    # random weights make nearly flat maps and small gradients: a larger step than the paper's 20 shows the effect
    excited, log = run(sd, ["melted"], ExciteSettings(scale_factor=200), 4)
    for step in (1, 2, 3):
        assert (attention(log, step) > attention(base, step)).all(), step
    assert log[0]["refinements"] > 0 and all(a > b for a, b in zip(*[[1 - x for x in log[0][k]] for k in
                                                                      ("loss_after_refinement", "loss")]))
    assert all(np.abs(a - b).max() > 0 for a, b in zip(excited, plain))
    # everything restored: the same processors and scheduler, and bit-identical plain generation afterwards
    assert processors(sd.backbone) == before
    assert "step" not in vars(sd.backbone.pipe.scheduler) and not sd.backbone.unet._forward_pre_hooks
    again = pixels(sd.generate([PROMPT] * 2, [0, 1], num_inference_steps=4, progress=False))
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))


def test_excite_on_the_toy_model_with_paper_settings():
    gen = load_generator(None, device="cpu")
    plain = pixels(gen.generate([PROMPT] * 2, [0, 1], num_inference_steps=10, progress=False))
    _, base = run(gen, ["melted"], ExciteSettings(scale_factor=0, max_refinement=0, max_step=5), 10)
    # the paper's step size and smoothing, its schedule scaled from 50 to 10 steps
    settings = ExciteSettings(max_step=5, thresholds=((0, 0.05), (2, 0.5), (4, 0.8)))
    excited, log = run(gen, ["melted"], settings, 10)
    for step in (1, 2, 3, 4):
        assert (attention(log, step) > attention(base, step)).all(), step
    assert attention(log, 4).mean() > attention(base, 4).mean() + 0.1
    assert all(np.abs(a - b).max() > 0 for a, b in zip(excited, plain))
    again = pixels(gen.generate([PROMPT] * 2, [0, 1], num_inference_steps=10, progress=False))
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))


@pytest.mark.parametrize("family", ["sdxl", "ldm"])
def test_other_backbones(tmp_path, family):
    """SDXL (two encoders, added conditioning, Euler's scaled UNet input) and LDM (BERT, no scale_model_input)."""
    from lego_inversion import testing

    folder = getattr(testing, f"build_tiny_{family}")(tmp_path / family)
    gen = load_generator(str(folder), device="cpu")
    before = processors(gen.backbone)
    plain = pixels(gen.generate([PROMPT] * 2, [0, 1], num_inference_steps=3, guidance_scale=3.0, progress=False))
    images = gen.generate([PROMPT] * 2, [0, 1], num_inference_steps=3, guidance_scale=3.0, progress=False,
                          excite=["ball", "melted"], excite_settings=ExciteSettings(scale_factor=200))
    assert all(np.abs(a - b).max() > 0 for a, b in zip(pixels(images), plain))
    assert [e["step"] for e in gen.excite_log[0]] == [0, 1, 2]
    scales = [e["input_scale"] for e in gen.excite_log[0]]  # x = c·z: Euler's 1/sqrt(σ²+1), LDM's 1
    scheduler = gen.backbone.pipe.scheduler
    expected = [1 / math.sqrt(s * s + 1) for s in scheduler.sigmas[:3].tolist()] if family == "sdxl" else [1.0] * 3
    assert scales == pytest.approx(expected, rel=1e-4)
    assert processors(gen.backbone) == before
    again = pixels(gen.generate([PROMPT] * 2, [0, 1], num_inference_steps=3, guidance_scale=3.0, progress=False))
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))


def test_cli_records_the_method_and_refuses_bad_words(tmp_path, capsys):
    from lego_inversion import cli

    out = tmp_path / "ae"
    assert cli.main(["generate", "--prompt", PROMPT, "--attend-and-excite", "ball", "melted", "--num-images", "2",
                     "--steps", "2", "--out", str(out), "--no-progress", "--ae-thresholds", "0:0.3"]) == 0
    rows = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert [r["method"] for r in rows] == ["attend-excite"] * 2 and rows[0]["excite"] == ["ball", "melted"]
    assert rows[0]["attend_excite"]["thresholds"] == {"0": 0.3} and rows[0]["attend_excite"]["max_step"] == 25
    bad = tmp_path / "bad"
    assert cli.main(["generate", "--prompt", PROMPT, "--attend-and-excite", "cube", "--steps", "2",
                     "--out", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'cube': not a word of the prompt" in err[0]
    assert not bad.exists()
    assert cli.main(["generate", "--prompt", PROMPT, "--ae-sigma", "1", "--out", str(bad), "--no-progress"]) == 2
    assert "--ae-sigma needs --attend-and-excite" in capsys.readouterr().err and not bad.exists()


def test_cli_on_a_learned_concept(tmp_path, tiny_sd, melted_run, capsys):
    from lego_inversion import cli

    out = tmp_path / "ae"
    assert cli.main(["generate", "--concept", str(melted_run), "--prompt", "a photo of a ball that is {concept}",
                     "--attend-and-excite", "{concept}", "ball", "--num-images", "1", "--steps", "2", "--out",
                     str(out), "--no-progress", "--ae-resolution", "8"]) == 0
    [row] = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert row["method"] == "lego+attend-excite" and row["excite"] == ["{concept}", "ball"]
    assert row["attend_excite"]["resolution"] == 8
    for flags, message in ((["--ae-thresholds", "zero:1"], "write STEP:T"),
                           (["--ae-resolution", "2"], "resolution 2: this model's cross-attention maps are 4, 8 high")):
        assert cli.main(["generate", "--prompt", PROMPT, "--model", str(tiny_sd), "--attend-and-excite", "ball",
                         "--steps", "2", "--out", str(tmp_path / "bad"), "--no-progress", *flags]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_context_manager_restores_on_error(sd):
    before = processors(sd.backbone)
    lat = sd.initial_latents([0])
    with pytest.raises(RuntimeError, match="boom"):
        with attend_and_excite(sd.backbone, [[5]], ExciteSettings(), lat.shape):
            raise RuntimeError("boom")
    assert processors(sd.backbone) == before and not sd.backbone.unet._forward_pre_hooks
    assert "scale_model_input" not in vars(sd.backbone.pipe.scheduler)
