"""LDM-256 backbone (the paper's main model, Lego §5): LDMBert + BERT tokenizer + VQ autoencoder."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import FAST, assert_each_prompt_encoded_once, assert_only_new_rows_changed, make_concept, snapshot
from safetensors.torch import load_file

from lego_inversion.backbones import load_backbone
from lego_inversion.backbones.ldm import LDMBackbone
from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.generation import load_generator
from lego_inversion.trainer import InversionRun, invert


@pytest.fixture(scope="module")
def tiny_ldm(tmp_path_factory):
    from lego_inversion.testing import build_tiny_ldm

    return build_tiny_ldm(tmp_path_factory.mktemp("models") / "tiny-ldm")


def test_new_tokens_join_the_bert_vocabulary_and_only_their_rows_train(tiny_ldm, tmp_path):
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertModel

    backbone = load_backbone(str(tiny_ldm))
    assert isinstance(backbone, LDMBackbone) and isinstance(backbone.slots[0].encoder, LDMBertModel)
    assert backbone.default_guidance_scale == 1.0
    vocab = backbone.slots[0].ext.num_base
    run = InversionRun(load_concept(make_concept(tmp_path / "melted")), backbone, InversionConfig(**FAST),
                       tmp_path / "out")
    assert run.subject_ids == [[vocab]] and run.concept_ids == [[vocab + 1]]
    ids = backbone.tokenize(["a photo of a <subj> that is <melted>"])[0][0].tolist()
    assert ids[:9] == [backbone.slots[0].tokenizer.cls_token_id, *backbone.prompt_token_ids("a photo of a"),
                       vocab, *backbone.prompt_token_ids("that is"), vocab + 1]
    # the VQ autoencoder is deterministic: cached latents have zero std
    assert float(run.with_set.std.abs().max()) == 0.0 and float(run.with_set.mean.abs().max()) > 0
    rows = run.params["rows/bert"]
    init = rows.detach().clone()
    before = snapshot(backbone)
    terms = run.losses()
    assert set(terms) == {"loss", "loss_concept", "loss_subject", "loss_context"}
    terms["loss_context"].backward()  # the Context Loss (Eq. 2) lives in LDMBert's input-embedding space
    assert rows.grad[1].abs().sum() > 0 and rows.grad[0].abs().sum() == 0
    run.optimizer.zero_grad(set_to_none=True)
    run.train_step()
    assert_only_new_rows_changed(before, snapshot(backbone))
    assert not torch.equal(rows.detach()[0], init[0]) and not torch.equal(rows.detach()[1], init[1])


def test_inversion_generation_and_reload(tiny_ldm, tmp_path):
    run = invert(make_concept(tmp_path / "melted"), tmp_path / "run", InversionConfig(**FAST), model=str(tiny_ldm),
                 progress=False)
    saved = load_file(run / "learned_embeds.safetensors")
    assert set(saved) == {"<subj>", "<melted>"} and saved["<melted>"].shape == (32,)
    assert (run / "validation" / "step_000002.png").is_file()
    gen = load_generator(str(tiny_ldm), [run])
    slot = gen.backbone.slots[0]
    torch.testing.assert_close(slot.ext.rows([slot.token_id("<melted>")])[0], saved["<melted>"])
    images = gen.generate(["a photo of a teddy bear that is {concept}", "a {subject}"], seeds=[0, 1],
                          num_inference_steps=2, progress=False)
    assert [im.size for im in images] == [(16, 16), (16, 16)]
    guided = gen.generate(["a photo of a teddy bear that is {concept}"], seeds=[0], num_inference_steps=2,
                          guidance_scale=3.0, progress=False)  # classifier-free guidance path of the pipeline
    assert guided[0].size == (16, 16)


def test_a_negative_prompt_fails_loudly_instead_of_being_ignored(tiny_ldm, tmp_path, capsys):
    """LDMTextToImagePipeline guides against "" and swallows negative_prompt; `lego generate` says so, exit 2,
    and writes nothing. The same prompt with and without it gives the same image, which is why it must not pass."""
    from lego_inversion.cli import main

    gen = load_generator(str(tiny_ldm), [])
    latents = torch.randn(gen.backbone.latent_shape(1, 16), generator=torch.Generator().manual_seed(0))
    call = dict(prompt=["a cube"], latents=latents, num_inference_steps=2, guidance_scale=3.0, output_type="np",
                **gen.backbone.pipeline_kwargs(16, 16))
    plain = gen.backbone.pipe(**call).images
    swallowed = gen.backbone.pipe(**call, negative_prompt=["a ball"]).images
    assert (plain == swallowed).all()
    out = tmp_path / "out"
    capsys.readouterr()  # the loading bars of the pipeline above
    assert main(["generate", "--prompt", "a cube", "--negative-prompt", "a ball", "--out", str(out),
                 "--model", str(tiny_ldm), "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lego: error: --negative-prompt") and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_sampling_encodes_each_distinct_prompt_once(tiny_ldm, monkeypatch):
    assert_each_prompt_encoded_once(load_backbone(str(tiny_ldm)), monkeypatch)
