"""The trainer's quality levers (InversionConfig fields): timestep sampling, caption variants, vectors per token,
learning-rate schedule, Eq. 2 similarity, and model defaults from a model folder's lego_inversion.json."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from lego_inversion.backbones import load_backbone
from lego_inversion.concept import load_concept
from lego_inversion.config import CAPTION_OPENINGS, MODEL_DEFAULTS, InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.exemplars import ExemplarSet, caption_variants
from lego_inversion.images import center_crop_resize, load_image, rotate_hue, to_tensor
from lego_inversion.loop import lr_factor
from lego_inversion.trainer import InversionRun, invert

FAST = dict(steps=3, checkpoint_every=2, validation_steps=1, validation_images=1)


def test_lr_factor_by_hand():
    assert [lr_factor(s, 10, 0, "constant") for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert lr_factor(0, 10, 0, "cosine") == 1.0
    assert lr_factor(5, 10, 0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(10, 10, 0, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(4, 10, 0, "linear") == pytest.approx(0.6)
    # warm-up 2 of 10 steps: (s+1)/2 while warming, then decay over the remaining 8
    assert [lr_factor(s, 10, 2, "linear") for s in (0, 1, 2, 6)] == pytest.approx([0.5, 1.0, 1.0, 0.5])


def test_caption_variants_reword_the_opening_only():
    got = caption_variants("a photo of a <subj> that is <melted>", 3)
    assert got == ["a photo of a <subj> that is <melted>", "a rendering of a <subj> that is <melted>",
                   "a cropped photo of a <subj> that is <melted>"]
    assert caption_variants("<melted> cube", 3) == ["<melted> cube"] * 3  # no "a photo of": used as is
    assert caption_variants("a photo of x", 1) == ["a photo of x"]
    assert len(set(caption_variants("a photo of x", len(CAPTION_OPENINGS)))) == len(CAPTION_OPENINGS)


def test_config_rejects_bad_lever_values():
    for bad in ({"timestep_skew": 1.0}, {"timestep_skew": -0.1}, {"caption_variants": 0},
                {"caption_variants": len(CAPTION_OPENINGS) + 1}, {"vectors_per_token": 0},
                {"lr_schedule": "step"}, {"context_similarity": "l2"}, {"steps": 0}, {"hue_variants": 0},
                {"hue_variants": 13}):
        with pytest.raises(UserError):
            InversionConfig(**bad)
    cfg = InversionConfig().resolved({"steps": 120, "timestep_skew": 0.5})
    assert (cfg.steps, cfg.timestep_skew, cfg.caption_variants) == (120, 0.5, MODEL_DEFAULTS["caption_variants"])
    assert InversionConfig(steps=7).resolved({"steps": 120}).steps == 7  # the user's value wins
    with pytest.raises(UserError, match="timestep_skew"):
        InversionConfig().resolved({"timestep_skew": 2.0})


def test_skewed_timesteps_favour_high_noise(tiny_sd, concept_dir, tmp_path):
    """With α = 0.5 the drawn timesteps follow p(t) ∝ 1 - α cos(π t / T); by hand, the upper half holds
    ∫_{1/2}^{1} (1 - α cos πx) dx = 1/2 + α/π ≈ 0.659 of the mass (the whole integral is 1); uniform: 0.5."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    T = backbone.noise_scheduler.config.num_train_timesteps
    fractions = {}
    for skew in (0.0, 0.5):
        run = InversionRun(spec, backbone, InversionConfig(timestep_skew=skew, **FAST), tmp_path / f"o{skew}",
                           alias=str(skew))
        drawn = torch.cat([run.draw().timesteps for _ in range(400)])
        fractions[skew] = float((drawn >= T // 2).float().mean())
    assert fractions[0.0] == pytest.approx(0.5, abs=0.04)
    assert fractions[0.5] == pytest.approx(0.5 + 0.5 / math.pi, abs=0.04)


def test_caption_variants_and_vectors_per_token_reach_the_run(tiny_sd, concept_dir, tmp_path):
    backbone = load_backbone(str(tiny_sd))
    cfg = InversionConfig(caption_variants=3, vectors_per_token=2, **FAST)
    run = InversionRun(load_concept(concept_dir), backbone, cfg, tmp_path / "o")
    assert run.spec.tokens == ["<melted>", "<melted_1>"]
    assert run.with_set.captions[0] == caption_variants("a photo of a <subj> that is <melted> <melted_1>", 3)
    assert run.with_set.caption_index.shape == (len(run.with_set), 3)
    assert run.params["rows/text_encoder"].shape[0] == 3  # <subj> + two concept vectors
    seen = set()
    for _ in range(30):
        seen |= set(run.draw().groups[1][1].tolist())
    assert seen == {0, 1, 2}  # every caption variant is drawn
    assert set(run.losses()) == {"loss", "loss_concept", "loss_subject", "loss_context"}


def test_model_folder_sets_lever_defaults(tiny_sd, concept_dir, tmp_path):
    """A model folder's lego_inversion.json sets the None fields (steps, skew, ...); config.json records them."""
    model = shutil.copytree(tiny_sd, tmp_path / "model")
    (model / "lego_inversion.json").write_text(json.dumps({"steps": 2, "timestep_skew": 0.5,
                                                           "lr_schedule": "cosine"}))
    out = invert(concept_dir, tmp_path / "run", InversionConfig(checkpoint_every=2, validation_steps=1,
                                                                validation_images=1), model=str(model),
                 progress=False)
    saved = json.loads((out / "config.json").read_text())
    assert (saved["steps"], saved["timestep_skew"], saved["lr_schedule"]) == (2, 0.5, "cosine")
    assert saved["caption_variants"] == MODEL_DEFAULTS["caption_variants"]
    (model / "lego_inversion.json").write_text(json.dumps({"stepz": 2}))
    with pytest.raises(UserError, match="unknown key 'stepz'"):
        load_backbone(str(model))


def test_bundled_toy_model_sets_its_measured_defaults():
    """The toy model's lego_inversion.json reaches the backbone (docs/inversion_quality.md: 400 steps, skew 0.5,
    timesteps from 0.5 T up, exemplars at 6 hue turns, <subj> a constant at t >= 0.65 T), and a real model's defaults
    stay the library's."""
    backbone = load_backbone(None)
    cfg = InversionConfig().resolved(backbone.inversion_defaults)
    assert (cfg.steps, cfg.timestep_skew, cfg.timestep_min, backbone.default_learning_rate) == (400, 0.5, 0.5, 0.01)
    assert cfg.hue_variants == 6
    assert (cfg.select_every, cfg.select_by, cfg.select_subjects) == (50, "look", "cube,pyramid,heart")
    assert InversionConfig().resolved({}).select_every == 0 and InversionConfig().resolved({}).select_by == "exemplars"
    assert cfg.caption_variants == 1 and cfg.vectors_per_token == 1
    assert InversionConfig().resolved({}).hue_variants == MODEL_DEFAULTS["hue_variants"] == 1
    assert cfg.subject_frozen_above == 0.65 and InversionConfig().resolved({}).subject_frozen_above == 1.0


def test_norm_cap_keeps_rows_within_a_multiple_of_their_initializer(tiny_sd, concept_dir, tmp_path):
    """After every update each learned row's norm is at most norm_cap × its initializer's norm (by hand: the norm
    of the init word's row in the frozen table); without the cap a large learning rate carries rows past it."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    slot = backbone.slots[0]
    words = [spec.subject_init] + [c.init for c in spec.concepts]
    ids = [slot.tokenizer(w, add_special_tokens=False).input_ids[0] for w in words]
    init_norms = slot.base_table[ids].float().norm(dim=-1)
    norms = {}
    for cap in (0.0, 1.1):
        run = InversionRun(spec, backbone, InversionConfig(norm_cap=cap, learning_rate=1.0, **FAST),
                           tmp_path / f"o{cap}", alias=str(cap))
        for _ in range(3):
            run.train_step()
        norms[cap] = run.params["rows/text_encoder"].detach().norm(dim=-1)
    assert torch.all(norms[1.1] <= 1.1 * init_norms + 1e-5)
    assert torch.any(norms[0.0] > 1.1 * init_norms)
    with pytest.raises(UserError, match="norm_cap"):
        InversionConfig(norm_cap=0.2)


def test_init_decay_pulls_rows_toward_their_initializer_by_hand(tiny_sd, concept_dir, tmp_path):
    """init_decay γ: after the optimizer's update, rows -= lr·γ·(rows - init). By hand from a run without it
    (same seed, same first draw, so the same Adam step): r_γ = r_0 - lr·γ·(r_0 - init), with init the
    initializer words' rows of the frozen table."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    slot = backbone.slots[0]
    ids = [slot.tokenizer(w, add_special_tokens=False).input_ids[0]
           for w in [spec.subject_init] + [c.init for c in spec.concepts]]
    init = slot.base_table[ids].float()
    rows = {}
    for gamma in (0.0, 2.0):
        run = InversionRun(spec, backbone, InversionConfig(init_decay=gamma, learning_rate=0.1, **FAST),
                           tmp_path / f"d{gamma}", alias=f"d{gamma}")
        run.train_step()
        rows[gamma] = run.params["rows/text_encoder"].detach().clone()
    assert not torch.allclose(rows[0.0], init)  # the step moved the rows, so the pull has something to undo
    torch.testing.assert_close(rows[2.0], rows[0.0] - 0.1 * 2.0 * (rows[0.0] - init), rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="init_decay"):
        InversionConfig(init_decay=-1)


def test_subject_warmup_trains_the_subject_row_alone(tiny_sd, concept_dir, tmp_path):
    """During the first subject_warmup steps only <subj> moves (it learns from without/ images alone); the
    concept rows start moving after it."""
    backbone = load_backbone(str(tiny_sd))
    run = InversionRun(load_concept(concept_dir), backbone, InversionConfig(subject_warmup=2, **FAST),
                       tmp_path / "o")
    rows = run.params["rows/text_encoder"]
    start = rows.detach().clone()
    losses = run.losses()
    assert losses["loss"].item() == pytest.approx(losses["loss_subject"].item())  # no concept or context term
    for _ in range(2):
        run.train_step()
    after_warmup = rows.detach().clone()
    assert not torch.equal(after_warmup[0], start[0])           # <subj> learned
    assert torch.equal(after_warmup[1:], start[1:])             # the concept rows did not
    run.train_step()
    assert not torch.equal(rows.detach()[1:], start[1:])


def test_snr_gamma_and_timestep_min_reach_the_loss(tiny_sd, concept_dir, tmp_path):
    """Same seed, same draw: with Min-SNR-γ the concept term is the mean of w(t)·MSE, so no larger than without
    (w ≤ 1); timestep_min keeps every drawn t at or above its floor."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    T = backbone.noise_scheduler.config.num_train_timesteps
    runs = {g: InversionRun(spec, backbone, InversionConfig(snr_gamma=g, **FAST), tmp_path / f"g{g}", alias=f"g{g}")
            for g in (0.0, 0.5)}
    with torch.no_grad():
        plain, weighted = (runs[g].losses()["loss_concept"].item() for g in (0.0, 0.5))
    assert weighted < plain
    run = InversionRun(spec, backbone, InversionConfig(timestep_min=0.6, **FAST), tmp_path / "m", alias="m")
    assert min(int(run.draw().timesteps.min()) for _ in range(50)) >= int(0.6 * T)
    for bad in ({"timestep_min": 0.99}, {"snr_gamma": -1.0}):
        with pytest.raises(UserError):
            InversionConfig(**bad)


def test_rotate_hue_by_hand():
    """PIL's 8-bit HSV: pure red is H 0; a third of the wheel (H + 85) is green, two thirds (H + 171) blue; greys,
    black and white have no saturation and stay exactly as they are."""
    from PIL import Image
    img = Image.new("RGB", (4, 1))
    img.putdata([(255, 0, 0), (128, 128, 128), (0, 0, 0), (255, 255, 255)])
    third, two_thirds = (np.asarray(rotate_hue(img, f), dtype=int)[0] for f in (1 / 3, 2 / 3))
    assert np.abs(third[0] - (0, 255, 0)).max() <= 6 and np.abs(two_thirds[0] - (0, 0, 255)).max() <= 6
    assert third[1:].tolist() == two_thirds[1:].tolist() == [[128, 128, 128], [0, 0, 0], [255, 255, 255]]


def test_hue_views_are_drawn_and_one_hue_leaves_the_random_stream_alone():
    """A set of 2·hues views (view 2k + f: hue k, flipped if f) with std 0 and each view's latent equal to its index:
    every view is drawn, flip_p 0 draws unflipped views only, and with one hue a draw takes exactly the random
    numbers it took before hues existed (randint for the images, rand for the flips)."""
    def one_image(views):
        return ExemplarSet(mean=torch.arange(float(views)).view(1, views, 1, 1, 1), std=torch.zeros(1, views, 1, 1, 1),
                           ids=[torch.zeros(1, 2, dtype=torch.long)], caption_index=torch.zeros(1, 1, dtype=torch.long),
                           captions=[["x"]], geometry=torch.zeros(1, 2, 4))
    g, noise = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    drawn = one_image(6).sample(300, g, noise, flip_p=0.5)[0].flatten()
    assert set(drawn.tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
    assert set(one_image(6).sample(100, g, noise, flip_p=0.0)[0].flatten().tolist()) == {0.0, 2.0, 4.0}
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    latents = one_image(2).sample(50, g, noise, flip_p=0.5)[0].flatten()
    torch.randint(1, (50,), generator=ref)
    flips = (torch.rand(50, generator=ref) < 0.5).float()
    assert torch.equal(latents, flips) and torch.equal(g.get_state(), ref.get_state())


def test_hue_variants_reach_the_run(tiny_sd, concept_dir, tmp_path):
    """hue_variants 3: each exemplar is encoded as is and at turns of 1/3 and 2/3 of its hue (both flips each);
    view 0 is the one-hue run's own, view 2 the encoding of the image turned by a third, by hand."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    one = InversionRun(spec, backbone, InversionConfig(**FAST), tmp_path / "a", alias="a")
    three = InversionRun(spec, backbone, InversionConfig(hue_variants=3, **FAST), tmp_path / "b", alias="b")
    assert one.with_set.mean.shape[1] == 2 and three.with_set.mean.shape[1] == 6
    assert three.without_set.mean.shape[1] == 6
    torch.testing.assert_close(three.with_set.mean[:, :2], one.with_set.mean, atol=1e-5, rtol=1e-5)
    crop = center_crop_resize(load_image(spec.with_images[0]), three.resolution)
    turned, _ = backbone.encode_images(to_tensor(rotate_hue(crop, 1 / 3))[None])
    torch.testing.assert_close(three.with_set.mean[0, 2], turned[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(three.with_set.mean[0, 2], three.with_set.mean[0, 0])
    assert json.loads((invert(concept_dir, tmp_path / "c", InversionConfig(hue_variants=2, **FAST), model=str(tiny_sd),
                              progress=False) / "config.json").read_text())["hue_variants"] == 2


def test_subject_word_p_names_the_subject_in_words_on_a_fraction_of_concept_samples(tiny_sd, concept_dir, tmp_path):
    """subject_word_p: those concept samples are captioned with the subject's initializer word, so <subj> gets no
    gradient from them; the images drawn are the ones drawn without the lever (the with/ sample comes first), only
    regrouped; the fraction drawn matches p."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    runs = {p: InversionRun(spec, backbone, InversionConfig(subject_word_p=p, **FAST), tmp_path / f"p{p}",
                            alias=f"p{p}") for p in (0.0, 0.5, 1.0)}
    assert runs[0.0].word_set is None
    word = runs[1.0].word_set
    tokens = " ".join(runs[1.0].internal[t] for t in spec.tokens)
    assert word.captions[0] == [spec.caption(spec.with_images[0], "with", spec.subject_init, tokens)]
    assert spec.subject_init in word.captions[0][0] and "<subj" not in word.captions[0][0]
    assert word.mean is runs[1.0].with_set.mean  # the latents are shared, not encoded again
    plain, all_words = runs[0.0].draw(), runs[1.0].draw()
    assert [g[0] for g in all_words.groups] == [runs[1.0].without_set, word]
    torch.testing.assert_close(all_words.latents[all_words.n_subject:], plain.latents[plain.n_subject:])
    runs[1.0].losses()["loss_concept"].backward()
    grad = runs[1.0].params["rows/text_encoder"].grad
    assert grad[0].abs().sum() == 0 and grad[1].abs().sum() > 0   # <subj> silent, the concept learns
    half = runs[0.5]
    in_words = sum(d.groups[-1][1].numel() for d in (half.draw() for _ in range(200))
                   if d.groups[-1][0] is half.word_set)
    assert in_words / 400 == pytest.approx(0.5, abs=0.08)
    for seed in range(40):  # a first draw whose first concept sample is the one in words: it must move last
        cfgs = [InversionConfig(subject_word_p=p, seed=seed, **FAST) for p in (0.0, 0.5)]
        plain_run, mixed_run = (InversionRun(spec, backbone, c, tmp_path / f"s{seed}{i}", alias=f"s{seed}{i}")
                                for i, c in enumerate(cfgs))
        replay = torch.Generator().manual_seed(seed)
        torch.randint(len(plain_run.with_set), (2,), generator=replay), torch.rand(2, generator=replay)  # images, flips
        if (torch.rand(2, generator=replay) < 0.5).tolist() == [True, False]:
            break
    plain, mixed = plain_run.draw(), mixed_run.draw()
    assert [g[0] for g in mixed.groups[1:]] == [mixed_run.with_set, mixed_run.word_set]
    n = plain.n_subject
    torch.testing.assert_close(mixed.latents[n:], plain.latents[n:].flip(0))
    torch.testing.assert_close(mixed.geometry[n:], plain.geometry[n:].flip(0))
    with pytest.raises(UserError, match="subject_word_p"):
        InversionConfig(subject_word_p=1.5)
    with pytest.raises(ValueError, match="recaptioned"):
        word.recaptioned(backbone, word.captions + [["one image too many"]])


def test_subject_frozen_p_holds_subj_constant_in_a_fraction_of_concept_samples(tiny_sd, concept_dir, tmp_path):
    """subject_frozen_p: in those concept samples <subj> is a constant (no gradient through them), as in every
    sample with --no-subject-from-with; the images are the ones drawn without the lever, only regrouped (samples
    whose <subj> learns first); the fraction drawn matches p."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    runs = {p: InversionRun(spec, backbone, InversionConfig(subject_frozen_p=p, **FAST), tmp_path / f"f{p}",
                            alias=f"f{p}") for p in (0.0, 0.5, 1.0)}
    for p, learns in ((0.0, True), (1.0, False)):
        runs[p].losses()["loss_concept"].backward()
        grad = runs[p].params["rows/text_encoder"].grad
        assert (grad[0].abs().sum() > 0) == learns and grad[1].abs().sum() > 0
    assert [g[2] for g in runs[1.0].draw().groups] == [False, True]  # subject batch learns, concept batch constant
    half = runs[0.5]
    held = sum(g[1].numel() for d in (half.draw() for _ in range(200)) for g in d.groups[1:] if g[2])
    assert held / 400 == pytest.approx(0.5, abs=0.08)
    for seed in range(40):  # a first draw whose first concept sample is the constant one: it must move last
        replay = torch.Generator().manual_seed(seed)
        torch.randint(len(half.with_set), (2,), generator=replay), torch.rand(2, generator=replay)  # images, flips
        if (torch.rand(2, generator=replay) < 0.5).tolist() == [True, False]:
            break
    plain_run, mixed_run = (InversionRun(spec, backbone, InversionConfig(subject_frozen_p=p, seed=seed, **FAST),
                                         tmp_path / f"s{p}", alias=f"s{p}") for p in (0.0, 0.5))
    plain, mixed = plain_run.draw(), mixed_run.draw()
    assert [g[2] for g in mixed.groups[1:]] == [False, True]
    n = plain.n_subject
    torch.testing.assert_close(mixed.latents[n:], plain.latents[n:].flip(0))
    torch.testing.assert_close(mixed.geometry[n:], plain.geometry[n:].flip(0))
    with pytest.raises(UserError, match="subject_frozen_p"):
        InversionConfig(subject_frozen_p=-0.1)


def test_subject_frozen_steps_holds_subj_constant_in_the_concept_batch_then_frees_it(tiny_sd, concept_dir, tmp_path):
    """subject_frozen_steps K: the first K steps are --no-subject-from-with's steps exactly (same draws, same rows);
    from step K on, <subj> learns from the concept batch too (§4.3)."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    phased, frozen, free = (InversionRun(spec, backbone, InversionConfig(**kw, **FAST), tmp_path / name, alias=name)
                            for name, kw in (("phased", dict(subject_frozen_steps=2)),
                                             ("frozen", dict(subject_from_with=False)), ("free", {})))
    for run in (phased, frozen, free):
        for _ in range(2):
            run.train_step()
    rows = [run.params["rows/text_encoder"].detach() for run in (phased, frozen, free)]
    torch.testing.assert_close(rows[0], rows[1], rtol=0, atol=0)
    assert not torch.equal(rows[0], rows[2])
    assert [g[2] for g in phased.draw().groups] == [False, False]  # step 2: the concept batch's <subj> learns
    phased.losses()["loss_concept"].backward()
    assert phased.params["rows/text_encoder"].grad[0].abs().sum() > 0
    with pytest.raises(UserError, match="subject_frozen_steps"):
        InversionConfig(subject_frozen_steps=-1)


def test_subject_frozen_above_holds_subj_constant_in_the_high_noise_concept_samples(tiny_sd, concept_dir, tmp_path):
    """subject_frozen_above f: the concept samples at t >= f·T hold <subj> (after those that learn), the draw is the
    lever-free draw regrouped; at f 1 it is the default run, at f <= the training floor --no-subject-from-with's run,
    to the bit."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    base = dict(timestep_min=0.3, **FAST)
    names = {"off": dict(subject_frozen_above=1.0), "free": {}, "all": dict(subject_frozen_above=0.3),
             "frozen": dict(subject_from_with=False), "half": dict(subject_frozen_above=0.65), "probe": {}}
    runs = {name: InversionRun(spec, backbone, InversionConfig(**kw, **base), tmp_path / name, alias=name)
            for name, kw in names.items()}
    split = 0
    for _ in range(30):
        plain, half = runs["probe"].draw(), runs["half"].draw()
        n, t = plain.n_subject, half.timesteps[half.n_subject:]
        sizes = [(g[1].shape[0], g[2]) for g in half.groups[1:]]
        held = (t >= 0.65 * 1000).tolist()
        assert held == sorted(held) and sizes == [(k, h) for k, h in ((held.count(False), False),
                                                                     (held.count(True), True)) if k]
        split += len(sizes) == 2
        same = torch.cat([torch.arange(n), n + torch.argsort(plain.timesteps[n:] >= 650, stable=True)])
        for a, b in ((half.latents, plain.latents), (half.noise, plain.noise), (half.timesteps, plain.timesteps)):
            torch.testing.assert_close(a, b[same], rtol=0, atol=0)
    assert split > 0
    for name in ("off", "free", "all", "frozen"):
        for _ in range(2):
            runs[name].train_step()
    rows = {name: runs[name].params["rows/text_encoder"].detach() for name in ("off", "free", "all", "frozen")}
    torch.testing.assert_close(rows["off"], rows["free"], rtol=0, atol=0)
    torch.testing.assert_close(rows["all"], rows["frozen"], rtol=0, atol=0)
    assert not torch.equal(rows["all"], rows["free"])
    mixed = InversionRun(spec, backbone, InversionConfig(subject_frozen_above=0.65, subject_frozen_p=0.5,
                                                         subject_word_p=0.3, **base), tmp_path / "mixed", alias="mixed")
    seen = set()
    for _ in range(60):  # with the other two levers: <subj> learning (low noise only), then constant, then the word
        d = mixed.draw()
        kinds = [(g[0] is mixed.word_set, g[2]) for g in d.groups[1:]]
        assert kinds == sorted(kinds) and len(set(kinds)) == len(kinds)
        at = d.n_subject
        for (word, held), g in zip(kinds, d.groups[1:]):
            t = d.timesteps[at:at + len(g[1])]
            assert word or held or bool((t < 650).all())
            seen.add((word, held, bool((t >= 650).any())))
            at += len(g[1])
    assert {(False, True, True), (False, True, False), (True, False, True)} <= seen
    for bad in (0.0, 1.5):
        with pytest.raises(UserError, match="subject_frozen_above"):
            InversionConfig(subject_frozen_above=bad)


def test_contrast_weight_adds_the_subject_batch_again_concept_captioned(tiny_sd, concept_dir, tmp_path):
    """contrast_weight: the draw is the lever-free draw (same random streams) plus the subject batch's images, ε and
    t again, captioned as the concept batch with <subj> a constant; the Eq. 3 terms are unchanged, and the hinge's
    gradient reaches the concept row only."""
    backbone = load_backbone(str(tiny_sd))
    spec = load_concept(concept_dir)
    plain_run, run = (InversionRun(spec, backbone, InversionConfig(contrast_weight=w, contrast_margin=0.5, **FAST),
                                   tmp_path / f"c{w}", alias=f"c{w}") for w in (0.0, 1.0))
    plain, draw = plain_run.draw(), run.draw()
    n, total = draw.n_subject, plain.latents.shape[0]
    assert draw.n_contrast == n > 0 and plain.n_contrast == 0 and draw.latents.shape[0] == total + n
    for x, y in ((draw.latents, plain.latents), (draw.noise, plain.noise), (draw.timesteps, plain.timesteps)):
        torch.testing.assert_close(x[:total], y)
        torch.testing.assert_close(x[total:], y[:n])
    kind = {id(r.with_set): "with" for r in (run, plain_run)} | {id(r.without_set): "without" for r in (run, plain_run)}
    assert len(draw.groups) == len(plain.groups) + 1 and all(
        kind[id(a[0])] == kind[id(b[0])] and torch.equal(a[1], b[1]) and a[2] == b[2]
        for a, b in zip(draw.groups, plain.groups))
    last = draw.groups[-1]
    assert last[0] is run.with_set and last[2] is True and last[1].numel() == n
    from lego_inversion.loop import forward

    terms, plain_terms = forward([run], [draw])[0], forward([plain_run], [plain])[0]
    for key in ("loss_concept", "loss_subject"):
        torch.testing.assert_close(terms[key], plain_terms[key], rtol=1e-5, atol=1e-6)
    assert float(terms["loss_contrast"].detach()) > 0  # a margin of 0.5 is far from met at the start
    terms["loss_contrast"].backward()
    grad = run.params["rows/text_encoder"].grad
    assert grad[0].abs().sum() == 0 and grad[1].abs().sum() > 0  # <subj> constant, the concept row pushed
    assert "loss_contrast" not in plain_terms
    with pytest.raises(UserError, match="contrast_weight"):
        InversionConfig(contrast_weight=-1.0)
    with pytest.raises(UserError, match="contrast_margin"):
        InversionConfig(contrast_margin=2.0)
