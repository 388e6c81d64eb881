"""Generation: prompt expansion, composition of two concepts, per-image seeds, the learned rows' effect, and
`lego generate`'s output folder and records."""

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from lego_inversion.backbones import load_backbone, resolve_model
from lego_inversion.cli import main
from lego_inversion.errors import UserError
from lego_inversion.formats import load_learned
from lego_inversion.generation import ConceptGenerator, default_model, load_generator
from lego_inversion.manifest import read_manifest

BEAR = "a photo of a bear that is {frozen}"


@pytest.fixture(scope="module")
def gen(tiny_sd, melted_run, frozen_run):
    return load_generator(str(tiny_sd), [melted_run, frozen_run])


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_expand_whole_concepts_and_single_tokens(gen):
    assert set(gen.concepts) == {"melted", "frozen"}  # folder name, or `name` from concept.toml
    assert gen.expand_prompt("a bear, {melted} and {frozen}") == "a bear, <melted> and <frozen> <ice>"
    assert gen.expand_prompt("a {melted.subject} <ice>") == "a <subj> <ice>"
    with pytest.raises(UserError, match="2 concepts are loaded"):
        gen.expand_prompt("a {concept}")  # ambiguous with two concepts loaded: must name one
    with pytest.raises(UserError, match=r"names no loaded concept \(known: \{melted\}, \{frozen\}\)"):
        gen.expand_prompt("a {melty} bear")
    with pytest.raises(UserError, match="'frozen' has no subject token"):
        gen.expand_prompt("a {frozen.subject}")  # a Textual Inversion run has none


def test_prompts_follow_the_project_template_syntax(gen):
    """`{{`/`}}` are literal braces and a lone brace is an error (lego_inversion.prompts), not passed through."""
    assert gen.expand_prompt("a {{melted}} sign on a {melted} cube") == "a {melted} sign on a <melted> cube"
    with pytest.raises(UserError, match=r"unmatched '\{'"):
        gen.expand_prompt("a {melted cube")


def test_both_run_folders_named_run_give_no_alias(gen):
    assert gen.aliases == {}  # the fixtures' run folders are both called "run": ambiguous, so neither gets it
    with pytest.raises(UserError, match="names no loaded concept"):
        gen.expand_prompt("a {run}")


def test_concepts_are_addressable_by_run_folder_name(tiny_sd, melted_run, frozen_run, tmp_path, caplog):
    """The README's composition: run folders runs/melted and runs/frozen hold concepts named after their concept
    folders (melted_cube, frozen_bear); both names work. A third concept with the same <subj> logs a warning."""
    runs = tmp_path / "runs"
    melted = dataclasses.replace(load_learned(melted_run), name="melted_cube", source=runs / "melted")
    frozen = dataclasses.replace(load_learned(frozen_run), name="frozen_bear", source=runs / "frozen")
    vectors = load_learned(melted_run).vectors
    sleeping = dataclasses.replace(load_learned(melted_run), name="sleeping_heart", source=runs / "sleeping",
                                   tokens=["<sleeping>"], vectors={"<subj>": vectors["<subj>"],
                                                                   "<sleeping>": vectors["<melted>"]})
    with caplog.at_level(logging.WARNING, logger="lego_inversion.generation"):
        composed = ConceptGenerator(load_backbone(str(tiny_sd)), [melted, frozen, sleeping])
    assert "subject token <subj> of concept 'sleeping_heart' is already taken by 'melted_cube'" in caplog.text
    assert composed.aliases == {"melted": "melted_cube", "frozen": "frozen_bear", "sleeping": "sleeping_heart"}
    readme = "a photo of a bear that is {melted} and {frozen}"
    assert composed.expand_prompt(readme) == "a photo of a bear that is <melted> and <frozen> <ice>"
    assert composed.expand_prompt("{melted_cube} {frozen_bear} {melted.subject}") == "<melted> <frozen> <ice> <subj>"
    with pytest.raises(UserError, match=r"shares its subject token with 'melted_cube'; write \{melted_cube.subject\}"):
        composed.expand_prompt("a {sleeping.subject}")


def test_composed_generation_is_seeded_per_image(gen):
    prompts = ["a photo of a bear that is {melted} and {frozen}"] * 3
    images = gen.generate(prompts, seeds=[7, 8, 7], num_inference_steps=2, batch_size=2, progress=False)
    assert len(images) == 3 and images[0].size == (16, 16)
    a, b, c = (_pixels(i) for i in images)
    assert np.array_equal(a, c)  # same seed, different batch position -> same image
    assert not np.array_equal(a, b)


def _reset_to_init(concept, backbone, init_words):
    """The same concept with its concept tokens' learned vectors replaced by their init words' embeddings (what
    training began from); the subject token keeps its learned vector."""
    reset = {t: [s.init_vector(init_words[t]).float() for s in backbone.slots] for t in concept.tokens}
    return dataclasses.replace(concept, vectors={**concept.vectors, **reset})


def test_learned_rows_change_the_image(gen, tiny_sd, frozen_run):
    """Same prompt, same seed: the learned rows vs the initial rows. Fails if generation ignored the learned rows."""
    learned = _pixels(gen.generate([BEAR], seeds=[3], num_inference_steps=2, progress=False)[0])
    again = _pixels(gen.generate([BEAR], seeds=[3], num_inference_steps=2, progress=False)[0])
    assert np.array_equal(learned, again)  # deterministic, so any difference below comes from the rows
    backbone = load_backbone(str(tiny_sd))
    initial = ConceptGenerator(backbone, [_reset_to_init(load_learned(frozen_run), backbone,
                                                        {"<frozen>": "frozen", "<ice>": "ice"})])
    assert initial.expand_prompt(BEAR) == gen.expand_prompt(BEAR)
    reset = _pixels(initial.generate([BEAR], seeds=[3], num_inference_steps=2, progress=False)[0])
    assert not np.array_equal(learned, reset)


def test_a_negative_prompt_steers_the_guided_image_and_is_refused_where_guidance_is_off(gen):
    """Same prompt and seed: the negative prompt changes the image under guidance; at guidance 1 the pipeline would
    drop it without a word, so generation refuses it."""
    def image(**kw):
        return _pixels(gen.generate([BEAR], seeds=[3], num_inference_steps=2, progress=False, **kw)[0])

    assert not np.array_equal(image(guidance_scale=5.0), image(guidance_scale=5.0, negative_prompt="a red ball"))
    with pytest.raises(UserError, match="guidance scale 1"):
        image(guidance_scale=1.0, negative_prompt="a red ball")


def test_prompt_seed_mismatch(gen):
    with pytest.raises(UserError, match="one seed per prompt"):
        gen.generate(["a"], seeds=[1, 2])


def test_default_model_goes_through_resolve_model(melted_run, frozen_run, caplog):
    melted, frozen = load_learned(melted_run), load_learned(frozen_run)
    assert default_model([melted, frozen]) == melted.meta["base_model"]
    assert default_model([]) is None
    toy = dataclasses.replace(melted, meta={**melted.meta, "base_model": "toy"})
    assert default_model([toy]) == resolve_model("toy")
    gone = dataclasses.replace(melted, meta={**melted.meta, "base_model": str(Path(melted_run) / "deleted-model")})
    with caplog.at_level(logging.WARNING, logger="lego_inversion.generation"):
        assert default_model([gone]) is None
    assert "is gone; using the embedded toy model" in caplog.text
    with pytest.raises(UserError, match=r"different base models.*pass --model"):
        default_model([melted, gone])


def test_wrong_base_model_is_refused(tmp_path, melted_run):
    from lego_inversion.testing import build_tiny_sd, tiny_clip_text_encoder

    from diffusers import StableDiffusionPipeline

    from lego_inversion.backbones import from_pipeline

    path = build_tiny_sd(tmp_path / "other")
    pipe = StableDiffusionPipeline.from_pretrained(str(path), safety_checker=None)
    pipe.text_encoder = tiny_clip_text_encoder(hidden=64)
    with pytest.raises(UserError, match="expects \\[64\\]"):
        ConceptGenerator(from_pipeline(pipe, "other"), [load_learned(melted_run)])


def test_half_precision_generation_with_learned_tokens(tiny_sd, melted_run):
    """--dtype bf16/fp16: the text encoder still reports the model's dtype after the fp32 rows are installed
    (diffusers casts prompt embeddings to `text_encoder.dtype`; fp32 there broke every half-precision call on
    a GPU), the learned rows stay fp32 and equal to the saved ones, and the concept still changes the image
    compared with its initial rows on the same prompt and seed."""
    import torch

    half = load_generator(str(tiny_sd), [melted_run], device="cpu", dtype="bf16")
    encoder = half.backbone.slots[0].encoder
    assert encoder.dtype == torch.bfloat16 and half.backbone.unet.dtype == torch.bfloat16
    ext = half.backbone.slots[0].ext
    assert ext.extra.dtype == torch.float32
    saved = load_learned(melted_run).vectors["<melted>"][0]
    torch.testing.assert_close(ext.rows(half.backbone.token_ids(["<melted>"])[0])[0].detach(), saved)
    backbone = load_backbone(str(tiny_sd), device="cpu", dtype="bf16")
    initial = ConceptGenerator(backbone, [_reset_to_init(load_learned(melted_run), backbone, {"<melted>": "melted"})])
    prompt = ["a photo of a bear that is {melted}"]
    with_concept = half.generate(prompt, seeds=[3], num_inference_steps=2, progress=False)[0]
    reset = initial.generate(prompt, seeds=[3], num_inference_steps=2, progress=False)[0]
    assert with_concept.size == (16, 16)
    assert not np.array_equal(_pixels(with_concept), _pixels(reset))


@pytest.fixture
def progress_bars_on():
    """Bars on before the test (so that it can see them being turned off) and after it."""
    import diffusers.utils.logging
    import huggingface_hub.utils
    import transformers.utils.logging

    def enable():
        diffusers.utils.logging.enable_progress_bar()
        transformers.utils.logging.enable_progress_bar()
        huggingface_hub.utils.enable_progress_bars()

    enable()
    yield
    enable()


def test_generate_records_pair_a_text_baseline_with_a_learned_set(tiny_sd, melted_run, tmp_path, capfd,
                                                                  progress_bars_on):
    """--about records the concept a plain-prompt set stands for, so it pairs with the learned set by concept ×
    subject × seed; --no-progress silences diffusers' and transformers' loading bars too."""
    import diffusers.utils.logging
    import transformers.utils.logging

    common = ["--num-images", "2", "--steps", "1", "--subject", "ball", "--seed", "4", "--no-progress"]
    text, lego = tmp_path / "text", tmp_path / "lego"
    assert main(["generate", "--model", str(tiny_sd), "--prompt", "a photo of a ball that is melted",
                 "--about", "melted", "--out", str(text), *common]) == 0
    assert main(["generate", "--concept", str(melted_run), "--prompt", "a photo of a ball that is {melted}",
                 "--out", str(lego), *common]) == 0
    err = capfd.readouterr().err
    assert "Loading" not in err and "it/s" not in err, err
    assert not diffusers.utils.logging.is_progress_bar_enabled()
    assert not transformers.utils.logging.is_progress_bar_enabled()
    baseline, learned = read_manifest(text / "images.jsonl"), read_manifest(lego / "images.jsonl")
    keys = [("melted", "ball", 4), ("melted", "ball", 5)]
    assert [(r.concept, r.subject, r.seed) for r in baseline] == keys
    assert [(r.concept, r.subject, r.seed) for r in learned] == keys
    assert {r.method for r in baseline} == {"text"} and {r.method for r in learned} == {"lego"}
    assert learned[0].expanded_prompt == "a photo of a ball that is <melted>"
    assert baseline[0].expanded_prompt == "a photo of a ball that is melted"
    assert all(r.path.is_file() and r.model == str(tiny_sd) for r in baseline + learned)


def _run_cli(capsys, args):
    capsys.readouterr()  # only this command's stderr
    code = main(args)
    return code, capsys.readouterr().err.strip()


def test_generate_refuses_a_non_empty_folder_unless_overwrite(tiny_sd, tmp_path, capsys):
    out = tmp_path / "gen"
    base = ["generate", "--model", str(tiny_sd), "--out", str(out), "--steps", "1"]
    assert main(base + ["--prompt", "a cube", "--prompt", "a ball", "--num-images", "2"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["0000.png", "0001.png", "0002.png", "0003.png", "grid.png", "images.jsonl"]

    code, err = _run_cli(capsys, base + ["--prompt", "a star", "--num-images", "1"])
    assert code == 2 and "not empty; pass --overwrite" in err and "\n" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written

    assert main(base + ["--prompt", "a star", "--num-images", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "grid.png", "images.jsonl"]  # no stale images
    [record] = read_manifest(out / "images.jsonl")
    assert record.prompt == "a star" and record.seed == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary sibling is gone

    (out / "notes.txt").write_text("mine")  # --overwrite replaces the whole folder: refuse to delete this
    code, err = _run_cli(capsys, base + ["--prompt", "a star", "--overwrite"])
    assert code == 2 and "'notes.txt'" in err and (out / "notes.txt").read_text() == "mine"

    code, err = _run_cli(capsys, ["generate", "--model", str(tiny_sd), "--prompt", "x", "--out",
                                  str(tmp_path / "new"), "--about", "melted", "--concept", str(out)])
    assert code == 2 and "--about is for plain-prompt baselines" in err and not (tmp_path / "new").exists()


def test_generate_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("images per prompt (default: 4)", "sampler steps (default: 50)", "(default: float32)",
                   "--overwrite", "--about NAME", "--no-progress", "run folder's name"):
        assert phrase in text, phrase


def test_images_jsonl_lines_are_image_records(tmp_path):
    """write_image_set writes what read_manifest reads (the one record type), file names relative."""
    from PIL import Image

    from lego_inversion.generation import write_image_set
    from lego_inversion.manifest import ImageRecord

    images = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    records = [ImageRecord(path=Path(f"{i:04d}.png"), prompt="p", seed=i, subject="ball", method="text",
                           concepts=("melted",)) for i in range(2)]
    write_image_set(tmp_path / "set", images, records, cols=2)
    lines = [json.loads(line) for line in (tmp_path / "set" / "images.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == ["0000.png", "0001.png"]
    assert [r.path for r in read_manifest(tmp_path / "set" / "images.jsonl")] == [tmp_path / "set" / "0000.png",
                                                                                   tmp_path / "set" / "0001.png"]
