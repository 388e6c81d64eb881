"""The concept folder format and images as users really have them."""

import io

import numpy as np
import pytest
from PIL import Image

from concept_fixtures import CONCEPT_TOML, make_concept
from lego_inversion.concept import load_concept
from lego_inversion.errors import UserError
from lego_inversion.images import load_image


def test_schema_as_written_in_the_issue(concept_dir):
    spec = load_concept(concept_dir)
    assert spec.name == "melted" and spec.subject_init == "cube" and spec.subject_token == "<subj>"
    assert spec.tokens == ["<melted>"]
    assert spec.concepts[0].positives == ("melted", "molten", "dripping")
    assert len(spec.with_images) == 2 and len(spec.without_images) == 2
    img = spec.with_images[0]
    assert spec.caption(img, "with", "<subj>") == "a photo of a <subj> that is <melted>"
    assert spec.caption(spec.without_images[0], "without", "cube") == "a photo of a cube"
    assert spec.evaluation["questions"] == ["Is the {target} melted?"]


def test_multi_token_concept_and_caption_override(tmp_path):
    toml = CONCEPT_TOML.replace('[prompts]', '''[[concept]]
token = "<ice>"
init = "ice"
positives = ["ice"]
negatives = ["fire"]

[captions]
"with/w1.png" = "a close-up of a {subject}, {concept}"

[prompts]''')
    spec = load_concept(make_concept(tmp_path / "c", toml))
    assert spec.tokens == ["<melted>", "<ice>"]
    assert spec.caption(spec.with_images[0], "with", "<subj>") == "a photo of a <subj> that is <melted> <ice>"
    assert spec.caption(spec.with_images[1], "with", "<subj>") == "a close-up of a <subj>, <melted> <ice>"


@pytest.mark.parametrize("mutate, message", [
    (lambda r: __import__("shutil").rmtree(r / "with"), "with: missing folder"),
    (lambda r: [p.unlink() for p in (r / "without").iterdir()], "without: no images"),
    (lambda r: (r / "with" / "w0.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really"), "w0.png: cannot read"),
    (lambda r: (r / "concept.toml").write_text("[subject\ninit='x'"), "not valid TOML"),
    (lambda r: (r / "concept.toml").write_text(CONCEPT_TOML + "\ncolour = 'red'\n"), "unknown key 'colour'"),
    (lambda r: (r / "concept.toml").write_text(CONCEPT_TOML.replace('init = "cube"', 'init = "cube"\nsize = 3')),
     "unknown key 'size' in [subject]"),
    (lambda r: (r / "concept.toml").write_text(CONCEPT_TOML.replace('"<melted>"', '"<subj>"')), "used twice"),
    (lambda r: (r / "concept.toml").write_text(CONCEPT_TOML.replace("{subject} that", "thing that")),
     "prompts.with must contain {subject}"),
    (lambda r: (r / "concept.toml").write_text(CONCEPT_TOML.replace("{concept}", "{concpt}")), "unknown placeholder"),
    (lambda r: (r / "concept.toml").write_text(CONCEPT_TOML.replace('positives = ["melted", "molten", "dripping"]',
                                                                    'positives = "melted"')), "list of non-empty"),
    (lambda r: (r / "concept.toml").unlink(), "concept.toml: missing"),
    (lambda r: (r / "concept.toml").write_text(
        CONCEPT_TOML.replace("[validation]", "[validation]\nprompt = \"a {subject} {concpt}\"")),
     "validation.prompt: unknown placeholder {concpt}"),
    (lambda r: (r / "concept.toml").write_text(
        CONCEPT_TOML.replace("[validation]", "[validation]\nprompt = \"a {subject} {concept\"")),
     "validation.prompt: unmatched '{'"),
])
def test_bad_input_is_one_clear_line(concept_dir, mutate, message):
    mutate(concept_dir)
    with pytest.raises(UserError) as err:
        load_concept(concept_dir)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _png_bytes(image, **kw):
    buf = io.BytesIO()
    image.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_rgba_goes_onto_white_not_black(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 0] = 255
    arr[:4, :, 3] = 255  # top half opaque red, bottom half fully transparent
    path = tmp_path / "a.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = np.asarray(load_image(path))
    assert out.shape == (8, 8, 3)
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[7, 7]) == (255, 255, 255)


def test_sixteen_bit_greyscale_keeps_its_range(tmp_path):
    arr = np.array([[0, 65535], [32768, 16384]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(load_image(path))[..., 0]
    assert out[0, 0] == 0 and out[0, 1] == 255 and abs(int(out[1, 0]) - 128) <= 1 and abs(int(out[1, 1]) - 64) <= 1


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA"])
def test_other_modes_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (10, 6), (10, 200, 30)).convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    out = load_image(path, size=4)
    assert out.mode == "RGB" and out.size == (4, 4)


def test_exif_rotation_is_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white, landscape
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (10, 20)  # displayed as portrait
    top = np.asarray(out)[:5].mean()
    assert top > 200  # the white half is on top after rotating 90° clockwise


def test_large_image_is_reduced(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (0, 0, 255)).save(path, quality=80)
    out = load_image(path, size=64)
    assert out.size == (64, 64)
    r, _, b = np.asarray(out).reshape(-1, 3).mean(0)
    assert b > 240 and r < 15


def test_commented_example_schema_is_valid(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "concept.example.toml"
    root = make_concept(tmp_path / "ex", example.read_text())
    spec = load_concept(root)
    assert spec.name == "melted" and spec.subject_token == "<subj>" and spec.tokens == ["<melted>"]
    assert spec.validation["subjects"] == ["teddy bear", "sphere"]
