"""Saved files load back, and load in the other tools' real loaders (diffusers' load_textual_inversion)."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from lego_inversion.errors import UserError
from lego_inversion.formats import export, load_learned


def _pipe(tiny_sd):
    return StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None)


def test_learned_embeds_hold_every_token_with_metadata(melted_run):
    from safetensors import safe_open

    with safe_open(str(melted_run / "learned_embeds.safetensors"), "pt") as fh:
        keys, meta = set(fh.keys()), json.loads(fh.metadata()["lego_inversion"])
    assert keys == {"<subj>", "<melted>"}
    assert meta["method"] == "lego" and meta["config"]["steps"] == 2 and meta["concept"]["name"] == "melted"
    assert meta["base_model"].endswith("tiny-sd")
    concept = load_learned(melted_run)
    assert concept.tokens == ["<melted>"] and concept.subject_token == "<subj>"
    assert concept.vectors["<melted>"][0].shape == (32,)


def test_diffusers_files_load_with_the_real_loader(tiny_sd, melted_run):
    saved = load_file(melted_run / "learned_embeds.safetensors")
    files = sorted((melted_run / "diffusers").glob("*.safetensors"))
    assert [f.name for f in files] == ["melted.safetensors", "subj.safetensors"]
    pipe = _pipe(tiny_sd)
    for f in files:
        assert len(load_file(f)) == 1  # a single key: the token
        pipe.load_textual_inversion(str(f))
    table = pipe.text_encoder.get_input_embeddings().weight
    for token in ("<melted>", "<subj>"):
        torch.testing.assert_close(table[pipe.tokenizer.convert_tokens_to_ids(token)], saved[token])


def test_a1111_export_loads_in_diffusers_as_multi_vector(tiny_sd, frozen_run, tmp_path):
    concept = load_learned(frozen_run)
    [path] = export(concept, "a1111", tmp_path / "frozen")
    assert path.suffix == ".pt"
    data = torch.load(path, weights_only=True)  # no arbitrary pickle needed to read it
    assert data["name"] == "frozen" and data["string_to_param"]["*"].shape == (2, 32)
    pipe = _pipe(tiny_sd)
    # 2 rows -> a multi-vector token: "<frozen>" and "<frozen>_1", which diffusers expands in prompts
    pipe.load_textual_inversion(str(path), token="<frozen>")
    assert pipe.maybe_convert_prompt("a <frozen> bear", pipe.tokenizer) == "a <frozen> <frozen>_1 bear"
    table = pipe.text_encoder.get_input_embeddings().weight
    for i, token in enumerate(["<frozen>", "<frozen>_1"]):
        torch.testing.assert_close(table[pipe.tokenizer.convert_tokens_to_ids(token)],
                                   concept.vectors[concept.tokens[i]][0])


def test_comfyui_export_and_diffusers_export(frozen_run, melted_run, tmp_path):
    concept = load_learned(frozen_run)
    [path] = export(concept, "comfyui", tmp_path / "frozen.safetensors")
    data = load_file(path)
    assert set(data) == {"emb_params"}
    torch.testing.assert_close(data["emb_params"], concept.matrix(["<frozen>", "<ice>"]))
    written = export(load_learned(melted_run), "diffusers", tmp_path / "d", include_subject=True)
    assert sorted(p.name for p in written) == ["melted.safetensors", "subj.safetensors"]
    with pytest.raises(UserError, match="unknown"):
        export(concept, "ckpt", tmp_path / "x")


def test_corrupt_concept_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "learned_embeds.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_learned(bad)
    with pytest.raises(UserError, match="no learned_embeds"):
        load_learned(tmp_path)
