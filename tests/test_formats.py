"""Saved files load back, and load in the other tools' real loaders (diffusers' load_textual_inversion)."""

import json
import logging
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from lego_inversion.errors import UserError
from lego_inversion.formats import export, load_learned, save_learned


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


def test_export_into_a_folder_names_the_file_after_the_concept(tiny_sd, frozen_run, tmp_path, capsys):
    """The other tools take the trigger word from the file name: a folder --out gets <concept>.<ext>."""
    from lego_inversion.cli import main

    concept = load_learned(frozen_run)
    folder = tmp_path / "embeddings"
    folder.mkdir()
    assert main(["export", str(frozen_run), "--format", "a1111", "--out", str(folder)]) == 0
    assert capsys.readouterr().out.split() == [str(folder / "frozen.pt")]
    [comfy] = export(concept, "comfyui", f"{tmp_path / 'comfy'}/")  # a new folder, named by its trailing "/"
    assert comfy == tmp_path / "comfy" / "frozen.safetensors"
    pipe = _pipe(tiny_sd)  # the file loads in diffusers' real loader, rows intact
    pipe.load_textual_inversion(str(comfy), token="<frozen-comfy>")
    table = pipe.text_encoder.get_input_embeddings().weight
    for i, token in enumerate(["<frozen-comfy>", "<frozen-comfy>_1"]):
        torch.testing.assert_close(table[pipe.tokenizer.convert_tokens_to_ids(token)],
                                   concept.vectors[concept.tokens[i]][0])


def test_export_defaults_to_the_current_folder(frozen_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    concept = load_learned(frozen_run)
    assert export(concept, "kohya") == [Path("frozen.safetensors")]
    assert set(load_file(tmp_path / "frozen.safetensors")) == {"emb_params"}
    written = export(concept, "diffusers")
    assert sorted(map(str, written)) == ["frozen-diffusers/frozen.safetensors", "frozen-diffusers/ice.safetensors"]


def test_a_file_name_other_than_the_concept_name_is_warned(frozen_run, tmp_path, caplog):
    concept = load_learned(frozen_run)
    with caplog.at_level(logging.WARNING, logger="lego_inversion.formats"):
        [path] = export(concept, "a1111", tmp_path / "frozen.pt")
        assert path == tmp_path / "frozen.pt" and not caplog.records
        [path] = export(concept, "a1111", tmp_path / "my_embedding.pt")
    assert path == tmp_path / "my_embedding.pt" and path.is_file()
    [record] = caplog.records
    assert "prompts must say 'my_embedding', not the concept name 'frozen'" in record.getMessage()


def _bert_run(folder):
    """A run folder as `lego invert` writes it on LDM-256 / the toy model (BERT text encoder)."""
    meta = {"base_model": "toy", "backbone": "ldm", "method": "lego", "tokens": ["<melted>"], "slots": ["bert"],
            "subject_token": None, "concept": {"name": "melted"}}
    save_learned(folder, {"<melted>": [torch.randn(8)]}, ["bert"], meta)
    return folder


@pytest.mark.parametrize("fmt", ["a1111", "comfyui", "kohya"])
def test_bert_concepts_are_refused_for_clip_tools(tmp_path, capsys, fmt):
    from lego_inversion.cli import main

    run = _bert_run(tmp_path / "run")
    out = tmp_path / "out"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "BERT text encoder" in err and "use --format diffusers" in err and "\n" not in err
    assert not out.exists() and not list(tmp_path.glob("out*"))
    assert [p.name for p in export(load_learned(run), "diffusers", out)] == ["melted.safetensors"]


def test_only_safetensors_concept_files_are_read(tmp_path):
    pt = tmp_path / "learned_embeds.pt"
    torch.save({"<melted>": torch.zeros(4)}, pt)
    with pytest.raises(UserError, match=r"only \.safetensors concept files are loaded"):
        load_learned(pt)


def test_export_help_documents_naming_and_comfyui_syntax(capsys):
    from lego_inversion.cli import main

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("embedding:NAME", "writes embeddings/NAME.pt", "(default: the current folder",
                   "BERT text encoder"):
        assert phrase in text, phrase
