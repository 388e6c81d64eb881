"""The bundled toy model: shipped with the package, offline loading through the standard diffusers pipeline,
the contract, sizes, and the atomic export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lego_inversion.errors import UserError
from lego_inversion.toyworld import BUNDLED_MODEL, BUNDLED_ORACLE, MODEL_PARTS, model_path


def test_bundled_weights_ship_as_package_data():
    """Both weight folders are in the installed package (a packaging mistake fails here, never skips)."""
    from importlib.resources import files

    weights = files("lego_inversion.toyworld") / "weights"
    for part in MODEL_PARTS:
        assert (weights / "model" / part).is_dir() or (weights / "model" / part).is_file(), part
    assert (weights / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (weights / "oracle" / "oracle.safetensors").is_file() and (weights / "oracle" / "oracle.json").is_file()
    assert Path(str(weights / "model")) == BUNDLED_MODEL and Path(str(weights / "oracle")) == BUNDLED_ORACLE
    import tomllib

    globs = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = globs["tool"]["setuptools"]["package-data"]["lego_inversion"]
    shipped = [p for folder in (BUNDLED_MODEL, BUNDLED_ORACLE) for p in folder.rglob("*") if p.is_file()]
    for path in shipped:  # every committed weight file matches a package-data pattern
        assert any(path.match(pattern) for pattern in patterns), path


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


def test_export_round_trips_and_replaces_atomically(pipe, tmp_path):
    """An export of the loaded (fp16-born) weights is bit-identical to them, replaces an older export whole,
    leaves no temporary folder, and does not touch the caller's fp32 modules."""
    from lego_inversion.toyworld.model import export_model

    folder = tmp_path / "run" / "model"
    folder.mkdir(parents=True)
    (folder / "stale.txt").write_text("from an older export")
    export_model(pipe.vqvae, pipe.unet, folder, {"note": "test"})
    assert not (folder / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model"]
    assert pipe.unet.dtype == torch.float32 and pipe.vqvae.dtype == torch.float32
    assert json.loads((folder / "training.json").read_text()) == {"note": "test"}
    from safetensors.torch import load_file

    stored = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    theirs = pipe.unet.state_dict()
    assert stored.keys() == theirs.keys() and all(v.dtype == torch.float16 for v in stored.values())
    assert all(torch.equal(v.float(), theirs[k]) for k, v in stored.items())


def test_install_model_swaps_the_bundled_folder(pipe, tmp_path, monkeypatch, capsys):
    import lego_inversion.toyworld as toyworld
    from lego_inversion.cli import main
    from lego_inversion.toyworld.model import export_model

    bundled = tmp_path / "pkg" / "weights" / "model"
    bundled.mkdir(parents=True)
    (bundled / "old.txt").write_text("old model")
    monkeypatch.setattr(toyworld, "BUNDLED_MODEL", bundled)
    export = export_model(pipe.vqvae, pipe.unet, tmp_path / "run" / "model", {})
    (export / "bert").mkdir()  # an export completed by model_path: the text encoder is never installed
    bad = tmp_path / "bad"
    (bad / "unet").mkdir(parents=True)
    assert main(["toyworld", "install-model", str(bad)]) == 2
    assert "missing vqvae" in capsys.readouterr().err and (bundled / "old.txt").is_file()
    assert main(["toyworld", "install-model", str(export)]) == 0
    assert sorted(p.name for p in bundled.iterdir()) == sorted(p.name for p in export.iterdir() if p.name != "bert")
    assert sorted(p.name for p in bundled.parent.iterdir()) == ["model"]  # nothing left beside it


def test_bundled_defaults_file_is_the_one_training_writes():
    """`lego toyworld train` writes model.DEFAULTS as lego_inversion.json; the bundled file must be that dict, so a
    retrained model keeps the measured defaults (hue views, look selection, ...)."""
    from lego_inversion.toyworld.model import DEFAULTS

    assert json.loads((BUNDLED_MODEL / "lego_inversion.json").read_text()) == DEFAULTS
