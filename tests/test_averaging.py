"""Rows averaged over seeds (averaging.py): `lego invert --average-seeds`, `lego average`."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from concept_fixtures import CONCEPT_TOML, make_concept
from lego_inversion.averaging import average_runs
from lego_inversion.cli import main
from lego_inversion.config import InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.generation import load_generator
from lego_inversion.sweep import invert_many
from test_racing import LOOK, change_judge  # noqa: F401  (a fixture)

FAST = dict(steps=2, checkpoint_every=2, validation_steps=1, validation_images=1)


@pytest.fixture(scope="module")
def sweep(tiny_sd, tmp_path_factory):
    """melted × {lego, ti} × seeds 0 1 2 with --average-seeds, on the tiny SD model."""
    root = tmp_path_factory.mktemp("avg")
    concept = make_concept(root / "melted")
    invert_many([concept], ["lego", "ti"], [0, 1, 2], root / "runs", InversionConfig(**FAST), model=str(tiny_sd),
                progress=False, average=True)
    return root / "runs", concept


def test_average_seeds_is_the_mean_of_the_seeds_rows_and_loads_in_diffusers(sweep, tiny_sd):
    runs, _ = sweep
    for method, tokens in (("lego", {"<subj>", "<melted>"}), ("ti", {"<melted>"})):
        mean = load_file(runs / f"melted-{method}-mean" / "learned_embeds.safetensors")
        seeds = [load_file(runs / f"melted-{method}-s{s}" / "learned_embeds.safetensors") for s in (0, 1, 2)]
        assert set(mean) == tokens
        for token in tokens:
            by_hand = (seeds[0][token].double() + seeds[1][token].double() + seeds[2][token].double()) / 3
            torch.testing.assert_close(mean[token].double(), by_hand, rtol=0, atol=1e-6)
            assert not torch.allclose(seeds[0][token], seeds[1][token])  # the seeds differ, so the mean is new
        record = json.loads((runs / f"melted-{method}-mean" / "average.json").read_text())
        assert record == {"runs": [f"melted-{method}-s{s}" for s in (0, 1, 2)], "seeds": [0, 1, 2]}
    # diffusers' own loader takes the averaged token file
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None)
    pipe.load_textual_inversion(str(runs / "melted-lego-mean" / "diffusers" / "melted.safetensors"))
    table = pipe.text_encoder.get_input_embeddings().weight
    torch.testing.assert_close(table[pipe.tokenizer.convert_tokens_to_ids("<melted>")],
                               load_file(runs / "melted-lego-mean" / "learned_embeds.safetensors")["<melted>"])
    gen = load_generator(str(tiny_sd), [runs / "melted-lego-mean"])
    assert len(gen.generate([gen.expand_prompt("a photo of a ball that is {concept}")], [0],
                            num_inference_steps=1, progress=False)) == 1


def test_average_refuses_runs_that_do_not_belong_together(sweep, tiny_sd, tmp_path):
    runs, _ = sweep
    s0, s1 = runs / "melted-lego-s0", runs / "melted-lego-s1"
    with pytest.raises(UserError, match="two or more"):
        average_runs([s0], tmp_path / "a")
    with pytest.raises(UserError, match="method"):
        average_runs([s0, runs / "melted-ti-s1"], tmp_path / "a")
    other = make_concept(tmp_path / "other", CONCEPT_TOML.replace("sphere", "cone"))
    far = invert_many([other], ["lego"], [0], tmp_path / "o", InversionConfig(**FAST), model=str(tiny_sd),
                      progress=False)[0]
    with pytest.raises(UserError, match="different concept folders"):
        average_runs([s0, far], tmp_path / "a")
    for out in (s0, runs / "melted-ti-s0"):  # a run folder is never overwritten
        with pytest.raises(UserError, match="not an earlier average"):
            average_runs([s0, s1], out)
    assert not (tmp_path / "a").exists()


def test_cli_average_and_its_bad_input(sweep, tmp_path, capsys):
    runs, concept = sweep
    out = tmp_path / "mean"
    assert main(["average", str(runs / "melted-lego-s0"), str(runs / "melted-lego-s2"), "--out", str(out)]) == 0
    a, b = (load_file(runs / f"melted-lego-s{s}" / "learned_embeds.safetensors") for s in (0, 2))
    torch.testing.assert_close(load_file(out / "learned_embeds.safetensors")["<melted>"],
                               (a["<melted>"] + b["<melted>"]) / 2)
    capsys.readouterr()
    for args in (["average", str(runs / "melted-lego-s0"), "--out", str(tmp_path / "bad")],
                 ["invert", str(concept), "--seed", "0", "--average-seeds", "--out", str(tmp_path / "bad")],
                 ["invert", str(concept), "--seed", "0", "1", "--race", "2", "--average-seeds", "--out",
                  str(tmp_path / "bad")],
                 ["invert", str(concept), "--seed", "0", "1", "--average-seeds", "3", "--out", str(tmp_path / "bad")],
                 ["invert", str(concept), "--seed", "0", "1", "--average-seeds", "1", "--out", str(tmp_path / "bad")],
                 ["invert", str(concept), "--seed", "0", "1", "--average-seeds", "2", "--select-by", "exemplars",
                  "--out", str(tmp_path / "bad")]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("lego: error:") and "\n" not in err
        assert not (tmp_path / "bad").exists()


@pytest.mark.usefixtures("change_judge")
def test_average_of_the_best_looking_seeds(tiny_sd, tmp_path):
    """--average-seeds K: the mean of the K seeds with the highest kept look scores, by hand from selection.json."""
    concept = make_concept(tmp_path / "melted")
    runs = tmp_path / "runs"
    invert_many([concept], ["lego"], [0, 1, 2], runs, InversionConfig(**LOOK), model=str(tiny_sd), progress=False,
                average=True, top=2)
    scores = {s: json.loads((runs / f"melted-lego-s{s}" / "selection.json").read_text())["score"] for s in (0, 1, 2)}
    assert len(set(scores.values())) == 3  # the judge tells the seeds apart, so the choice is not a tie-break
    kept = sorted(sorted(scores, key=lambda s: -scores[s])[:2])
    assert json.loads((runs / "melted-lego-mean" / "average.json").read_text())["seeds"] == kept
    mean = load_file(runs / "melted-lego-mean" / "learned_embeds.safetensors")
    a, b = (load_file(runs / f"melted-lego-s{s}" / "learned_embeds.safetensors") for s in kept)
    for token in ("<subj>", "<melted>"):
        torch.testing.assert_close(mean[token].double(), (a[token].double() + b[token].double()) / 2, rtol=0,
                                   atol=1e-6)


def test_average_of_the_best_needs_look_scores(tiny_sd, tmp_path):
    concept = make_concept(tmp_path / "melted")
    with pytest.raises(UserError, match="ranks the seeds by their look score"):
        invert_many([concept], ["lego"], [0, 1], tmp_path / "runs", InversionConfig(**FAST), model=str(tiny_sd),
                    progress=False, average=True, top=2)
    assert not (tmp_path / "runs" / "melted-lego-mean").exists()
