"""SDXL backbone: two encoders learned together, pooled EOS, micro-conditioning, generation, clip_l/clip_g export."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import FAST, assert_each_prompt_encoded_once, assert_only_new_rows_changed, make_concept, snapshot
from safetensors.torch import load_file

from lego_inversion.backbones import load_backbone
from lego_inversion.backbones.sdxl import SDXL_CONTEXT_WEIGHTS, StableDiffusionXLBackbone
from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.formats import export, load_learned
from lego_inversion.generation import load_generator
from lego_inversion.losses import context_loss
from lego_inversion.trainer import InversionRun, invert

PROMPT = "a photo of a cube that is <melted>"


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    from lego_inversion.testing import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="module")
def sdxl_run(tiny_sdxl, tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl-run")
    concept = make_concept(root / "melted")
    return invert(concept, root / "run", InversionConfig(**FAST), model=str(tiny_sdxl), progress=False)


def test_pooled_output_is_taken_at_eos_with_new_tokens(tiny_sdxl):
    backbone = load_backbone(str(tiny_sdxl))
    assert isinstance(backbone, StableDiffusionXLBackbone)
    slot = backbone.slots[1]
    encoder = slot.encoder
    assert encoder.config.eos_token_id == 2  # the legacy config of the released SDXL checkpoints
    plain = backbone.tokenize(["a photo of a cube"])
    pooled_plain = backbone.encode_text(plain)["text_embeds"]
    backbone.add_tokens(["<melted>"], ["melted"])
    ids = backbone.tokenize([PROMPT])[1]
    new_id, eos = slot.token_id("<melted>"), slot.tokenizer.eos_token_id
    assert new_id > eos and int(ids.argmax()) == int((ids == new_id).nonzero()[0, 1])
    pooled = backbone.encode_text(backbone.tokenize([PROMPT]))["text_embeds"]
    with torch.no_grad():  # by hand: final-layer-normed hidden state at the first EOS, then the projection
        hidden = encoder.text_model(ids).last_hidden_state[0]
        eos_pos = int((ids[0] == eos).nonzero()[0])
        expected = encoder.text_projection(hidden[eos_pos])
        at_new_token = encoder.text_projection(hidden[int(ids[0].argmax())])
    torch.testing.assert_close(pooled[0], expected)
    assert not torch.allclose(expected, at_new_token), "the test could not tell EOS pooling from argmax pooling"
    encoder.text_model.eos_token_id = 2  # legacy argmax pooling must agree for prompts without new tokens
    torch.testing.assert_close(backbone.encode_text(plain)["text_embeds"], pooled_plain)


def test_conditioning_matches_the_pipeline(tiny_sdxl):
    backbone = load_backbone(str(tiny_sdxl))
    backbone.add_tokens(["<melted>"], ["melted"])
    cond = backbone.encode_text(backbone.tokenize([PROMPT, "a teddy bear"]))
    with torch.no_grad():
        embeds, _, pooled, _ = backbone.pipe.encode_prompt([PROMPT, "a teddy bear"], do_classifier_free_guidance=False)
        time_ids = backbone.pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), dtype=embeds.dtype,
                                                   text_encoder_projection_dim=32)
    assert cond["encoder_hidden_states"].shape == (2, 77, 32 + 64)
    torch.testing.assert_close(cond["encoder_hidden_states"], embeds)
    torch.testing.assert_close(cond["text_embeds"], pooled)
    torch.testing.assert_close(backbone.time_ids(16, 16, 2), time_ids.repeat(2, 1))
    assert backbone.time_ids(16, 16, 1).tolist() == [[16, 16, 0, 0, 16, 16]]
    noisy, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 500])
    with torch.no_grad():
        expected = backbone.unet(noisy, t, encoder_hidden_states=embeds,
                                 added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.repeat(2, 1)}).sample
        torch.testing.assert_close(backbone.predict(noisy, t, cond), expected)


def test_one_step_changes_only_the_new_rows_of_both_encoders(tiny_sdxl, tmp_path):
    backbone = load_backbone(str(tiny_sdxl))
    run = InversionRun(load_concept(make_concept(tmp_path / "melted")), backbone, InversionConfig(**FAST),
                       tmp_path / "out")
    assert set(run.params) == {"rows/text_encoder", "rows/text_encoder_2"}
    assert [p.shape for p in run.params.values()] == [(2, 32), (2, 64)]  # <subj>, <melted> in each space
    before = snapshot(backbone)
    rows_before = {k: v.detach().clone() for k, v in run.params.items()}
    terms = run.losses()
    expected_ctx = sum(w * context_loss(slot.ext.rows(ids), pos, neg, 0.07) for w, slot, ids, (pos, neg)
                       in zip(SDXL_CONTEXT_WEIGHTS, backbone.slots, run.concept_ids, run.context_sets))
    assert SDXL_CONTEXT_WEIGHTS == (0.5, 0.5)
    torch.testing.assert_close(terms["loss_context"], expected_ctx)
    run.train_step()
    assert_only_new_rows_changed(before, snapshot(backbone))
    for key, rows in run.params.items():
        assert not torch.equal(rows.detach(), rows_before[key]), f"{key} was not trained"


@pytest.mark.parametrize("dtype", ["float32", "bf16"])
def test_generation_and_saved_files_load_back(tiny_sdxl, sdxl_run, dtype):
    saved = load_file(sdxl_run / "learned_embeds.safetensors")
    assert saved["<melted>"].shape == (32,) and saved["<melted>::text_encoder_2"].shape == (64,)
    assert (sdxl_run / "validation" / "step_000002.png").is_file()  # generation through the SDXL pipeline
    gen = load_generator(str(tiny_sdxl), [sdxl_run], device="cpu", dtype=dtype)
    for slot, key in zip(gen.backbone.slots, ["<melted>", "<melted>::text_encoder_2"]):
        torch.testing.assert_close(slot.ext.rows([slot.token_id("<melted>")])[0], saved[key])
        assert slot.encoder.dtype == gen.backbone.unet.dtype  # diffusers casts prompt embeddings to this
    images = gen.generate(["a photo of a sphere that is {concept}"], seeds=[0], num_inference_steps=2,
                          progress=False)
    assert images[0].size == (16, 16)


def test_clip_l_clip_g_export_loads_through_diffusers_into_both_encoders(tiny_sdxl, sdxl_run, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    concept = load_learned(sdxl_run)
    [file] = export(concept, "comfyui", tmp_path / "melted.safetensors")
    tensors = load_file(file)
    assert set(tensors) == {"clip_l", "clip_g"}
    assert tensors["clip_l"].shape == (1, 32) and tensors["clip_g"].shape == (1, 64)
    [a1111] = export(concept, "a1111", tmp_path / "a1111.pt")  # Automatic1111 reads SDXL embeddings the same way
    assert a1111.suffix == ".safetensors" and set(load_file(a1111)) == {"clip_l", "clip_g"}

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion(tensors["clip_l"], token="<melted>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(tensors["clip_g"], token="<melted>", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    for encoder, tokenizer, i in [(pipe.text_encoder, pipe.tokenizer, 0), (pipe.text_encoder_2, pipe.tokenizer_2, 1)]:
        row = encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("<melted>")]
        torch.testing.assert_close(row, concept.vectors["<melted>"][i])
    out = pipe("a sphere that is <melted>", num_inference_steps=1, height=16, width=16, output_type="np")
    assert out.images.shape == (1, 16, 16, 3)

    folders = export(concept, "diffusers", tmp_path / "diffusers")  # one subfolder per text encoder
    assert sorted(p.parent.name for p in folders) == ["text_encoder", "text_encoder_2"]
    fresh = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl))
    fresh.load_textual_inversion(str(tmp_path / "diffusers" / "text_encoder_2" / "melted.safetensors"),
                                 token="<melted>", text_encoder=fresh.text_encoder_2, tokenizer=fresh.tokenizer_2)
    row = fresh.text_encoder_2.get_input_embeddings().weight[fresh.tokenizer_2.convert_tokens_to_ids("<melted>")]
    torch.testing.assert_close(row, concept.vectors["<melted>"][1])


def test_micro_conditioning_uses_each_exemplars_size_and_crop(tiny_sdxl, tmp_path):
    """time_ids = (original h, w, crop top, left, target h, w) per exemplar, as diffusers' SDXL training scripts
    record them: a 96x64 portrait centre-cropped to 32 px has its crop 16 px down at full size = 8 px at 32."""
    from PIL import Image

    from lego_inversion.exemplars import ExemplarSet
    from lego_inversion.images import crop_geometry

    assert crop_geometry(64, 96, 32) == (96, 64, 8, 0)      # portrait: cropped top and bottom
    assert crop_geometry(100, 50, 50) == (50, 100, 0, 25)   # landscape: (100-50)//2 = 25 px from the left
    assert crop_geometry(101, 50, 50, flipped=True) == (50, 101, 0, 26)  # the mirror image's left offset
    backbone = load_backbone(str(tiny_sdxl))
    paths = []
    for i, size in enumerate([(64, 96), (32, 32)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", size, (200, 10 * i, 0)).save(paths[-1])
    exemplars = ExemplarSet.build(backbone, paths, ["a cube"] * 2, resolution=32)
    assert exemplars.geometry[0, 0].tolist() == [96, 64, 8, 0] and exemplars.geometry[1, 1].tolist() == [32, 32, 0, 0]
    seen = []
    original = backbone.unet.forward
    backbone.unet.forward = lambda *a, **kw: seen.append(kw["added_cond_kwargs"]["time_ids"]) or original(*a, **kw)
    noisy = torch.zeros(2, *backbone.latent_shape(1, 32)[1:])
    cond = backbone.encode_text(backbone.tokenize(["a cube", "a cube"]))
    backbone.predict(noisy, torch.tensor([10, 10]), cond, exemplars.geometry[:, 0])
    backbone.unet.forward = original
    assert seen[0].float().tolist() == [[96, 64, 8, 0, 32, 32], [32, 32, 0, 0, 32, 32]]


def test_sampling_encodes_each_distinct_prompt_once(tiny_sdxl, monkeypatch):
    assert_each_prompt_encoded_once(load_backbone(str(tiny_sdxl)), monkeypatch, unconditional=False,
                                    exact=False)
