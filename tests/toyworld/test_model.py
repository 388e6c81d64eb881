"""The bundled toy model: offline loading through the standard diffusers pipeline, the contract, sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lego_inversion.errors import UserError
from lego_inversion.toyworld import BUNDLED_MODEL, model_path
from lego_inversion.toyworld.oracle import BUNDLED as BUNDLED_ORACLE

pytestmark = pytest.mark.skipif(not (BUNDLED_MODEL / "model_index.json").is_file(),
                                reason="toy model not trained/installed yet")


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    import os

    old = os.environ.get("LEGO_CACHE")
    os.environ["LEGO_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield model_path()
    finally:
        if old is None:
            os.environ.pop("LEGO_CACHE")
        else:
            os.environ["LEGO_CACHE"] = old


@pytest.fixture(scope="module")
def pipe(toy_dir):
    from diffusers import LDMTextToImagePipeline

    p = LDMTextToImagePipeline.from_pretrained(toy_dir)  # HF_HUB_OFFLINE=1 (conftest): no network
    p.set_progress_bar_config(disable=True)
    return p


def test_model_path_is_complete_and_cached(toy_dir):
    for part in ("unet", "vqvae", "scheduler", "model_index.json", "bert", "tokenizer"):
        assert (toy_dir / part).exists(), part
    assert (toy_dir / "bert" / "config.json").is_file() and (toy_dir / "tokenizer" / "vocab.txt").is_file()
    assert model_path() == toy_dir  # second call: the cached folder
    index = json.loads((toy_dir / "model_index.json").read_text())
    assert index["_class_name"] == "LDMTextToImagePipeline"
    assert index["bert"] == ["transformers", "BertModel"] and index["vqvae"][1] == "AutoencoderKL"


def test_contract_dimensions(pipe):
    assert pipe.unet.config.cross_attention_dim == 384 == pipe.bert.config.hidden_size
    assert 2 ** (len(pipe.vqvae.config.block_out_channels) - 1) == 8  # the LDM pipeline's hard-coded factor
    assert pipe.unet.dtype == torch.float32


def test_scaling_factor_gives_unit_latents(pipe):
    from lego_inversion.toyworld.model import images_to_tensor
    from lego_inversion.toyworld.oracle import sample_uniform
    from lego_inversion.toyworld.render import render

    x = images_to_tensor([render(s) for s in sample_uniform(32, seed=99)])
    with torch.no_grad():
        z = pipe.vqvae.encode(x).latent_dist.mean * pipe.vqvae.config.scaling_factor
    assert 0.6 < float(z.std()) < 1.6


def test_pipeline_generates_64px_images(pipe):
    g = torch.Generator().manual_seed(0)
    out = pipe(["a photo of a red cube", "a photo of a blue ball"], height=64, width=64, num_inference_steps=3,
               guidance_scale=3.0, generator=g).images
    assert [im.size for im in out] == [(64, 64), (64, 64)]
    a = np.asarray(out[0], dtype=np.float32)
    assert a.std() > 5  # not a blank image
    assert np.abs(a - np.asarray(out[1], dtype=np.float32)).mean() > 3  # the prompt matters


def test_committed_weights_fit_the_budget():
    files = [p for folder in (BUNDLED_MODEL, BUNDLED_ORACLE) for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".ckpt", ".pkl")]  # safetensors only


def test_incomplete_model_folder_is_a_user_error(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(UserError, match="incomplete"):
        model_path(tmp_path)
