"""Generation: prompt expansion, composition of two concepts, per-image seeds, and the concept's effect."""

import numpy as np
import pytest

from lego_inversion.errors import UserError
from lego_inversion.generation import load_generator


@pytest.fixture(scope="module")
def gen(tiny_sd, melted_run, frozen_run):
    return load_generator(str(tiny_sd), [melted_run, frozen_run])


def test_expand_whole_concepts_and_single_tokens(gen):
    assert set(gen.concepts) == {"melted", "frozen"}  # folder name, or `name` from concept.toml
    assert gen.expand_prompt("a bear, {melted} and {frozen}") == "a bear, <melted> and <frozen> <ice>"
    assert gen.expand_prompt("a {melted.subject} <ice>") == "a <subj> <ice>"
    with pytest.raises(UserError, match="2 concepts are loaded"):
        gen.expand_prompt("a {concept}")  # ambiguous with two concepts loaded: must name one
    with pytest.raises(UserError, match="names no loaded concept"):
        gen.expand_prompt("a {melty} bear")


def test_composed_generation_is_seeded_per_image(gen):
    prompts = ["a photo of a bear that is {melted} and {frozen}"] * 3
    images = gen.generate(prompts, seeds=[7, 8, 7], num_inference_steps=2, batch_size=2, progress=False)
    assert len(images) == 3 and images[0].size == (16, 16)
    a, b, c = (np.asarray(i, dtype=np.int16) for i in images)
    assert np.array_equal(a, c)  # same seed, different batch position -> same image
    assert not np.array_equal(a, b)


def test_learned_tokens_change_the_image(gen):
    with_concept, plain = gen.generate(["a photo of a bear that is {frozen}", "a photo of a bear that is"],
                                       seeds=[3, 3], num_inference_steps=2, progress=False)
    assert not np.array_equal(np.asarray(with_concept), np.asarray(plain))


def test_prompt_seed_mismatch(gen):
    with pytest.raises(UserError, match="one seed per prompt"):
        gen.generate(["a"], seeds=[1, 2])


def test_wrong_base_model_is_refused(tmp_path, melted_run):
    from lego_inversion.testing import build_tiny_sd, tiny_clip_text_encoder

    from diffusers import StableDiffusionPipeline

    from lego_inversion.backbones import from_pipeline
    from lego_inversion.formats import load_learned
    from lego_inversion.generation import ConceptGenerator

    path = build_tiny_sd(tmp_path / "other")
    pipe = StableDiffusionPipeline.from_pretrained(str(path), safety_checker=None)
    pipe.text_encoder = tiny_clip_text_encoder(hidden=64)
    with pytest.raises(UserError, match="expects \\[64\\]"):
        ConceptGenerator(from_pipeline(pipe, "other"), [load_learned(melted_run)])


def test_half_precision_generation_with_learned_tokens(tiny_sd, melted_run):
    """--dtype bf16/fp16: the text encoder still reports the model's dtype after the fp32 rows are installed
    (diffusers casts prompt embeddings to `text_encoder.dtype`; fp32 there broke every half-precision call on
    a GPU), the learned rows stay fp32 and equal to the saved ones, and the concept still changes the image."""
    import torch

    from lego_inversion.formats import load_learned

    half = load_generator(str(tiny_sd), [melted_run], device="cpu", dtype="bf16")
    encoder = half.backbone.slots[0].encoder
    assert encoder.dtype == torch.bfloat16 and half.backbone.unet.dtype == torch.bfloat16
    ext = half.backbone.slots[0].ext
    assert ext.extra.dtype == torch.float32
    saved = load_learned(melted_run).vectors["<melted>"][0]
    torch.testing.assert_close(ext.rows(half.backbone.token_ids(["<melted>"])[0])[0].detach(), saved)
    with_concept, plain = half.generate(["a photo of a bear that is {melted}", "a photo of a bear that is"],
                                        seeds=[3, 3], num_inference_steps=2, progress=False)
    assert with_concept.size == (16, 16)
    assert not np.array_equal(np.asarray(with_concept), np.asarray(plain))
