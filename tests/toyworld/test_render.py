"""Renderer: determinism by seed, validation, entanglement (the concept changes the subject itself), captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lego_inversion.toyworld.training_data import BASE_TEMPLATE, caption, sample_scenes
from lego_inversion.toyworld.render import APPEARANCES, CONCEPTS, SIZE, SUBJECTS, Scene, render


def _px(scene: Scene) -> np.ndarray:
    return np.asarray(render(scene), dtype=np.int16)


def test_same_scene_same_pixels_and_seed_changes_them():
    s = Scene("cube", "checkered", "melted", 1, seed=5)
    a, b = _px(s), _px(Scene("cube", "checkered", "melted", 1, seed=5))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, _px(Scene("cube", "checkered", "melted", 1, seed=6)))


@pytest.mark.parametrize("concept", ["none", *CONCEPTS])
def test_every_subject_renders_at_the_right_size(concept):
    for i, subject in enumerate(SUBJECTS):
        for variant in range(CONCEPTS.get(concept, 1)):
            img = render(Scene(subject, APPEARANCES[i], concept, variant, 3 if concept == "count" else 1, i))
            assert img.size == (SIZE, SIZE) and img.mode == "RGB"


def test_world_is_big_enough():
    assert len(SUBJECTS) >= 6 and len(CONCEPTS) >= 6 and len(APPEARANCES) >= 5
    assert all(n >= 2 for n in CONCEPTS.values())


def test_subjects_have_clearly_different_shapes():
    # Body silhouettes (pixels far from the background), pairwise IoU well below 1.
    masks = {}
    for s in SUBJECTS:
        a = _px(Scene(s, "blue", seed=0))
        masks[s] = np.abs(a - a[0, 0]).sum(-1) > 60
    for i, s in enumerate(SUBJECTS):
        for t in SUBJECTS[i + 1:]:
            iou = (masks[s] & masks[t]).sum() / (masks[s] | masks[t]).sum()
            assert iou < 0.85, (s, t, iou)


@pytest.mark.parametrize("concept", list(CONCEPTS))
def test_variants_of_a_concept_look_different(concept):
    a = _px(Scene("ball", "red", concept, 0, 3 if concept == "count" else 1, seed=1))
    b = _px(Scene("ball", "red", concept, 1, 3 if concept == "count" else 1, seed=1))
    assert np.abs(a - b).mean() > 3.0


def test_frozen_changes_the_subjects_own_colour():
    # Entanglement: the body's pixels themselves change (not only an overlay around them).
    plain = _px(Scene("cube", "red", seed=2))
    frozen = _px(Scene("cube", "red", "frozen", 1, seed=2))
    red = (plain[..., 0] > 180) & (plain[..., 1] < 80)
    assert red.sum() > 200
    assert (frozen[red][:, 2] - plain[red][:, 2]).mean() > 60  # the red body turned icy (blue channel up)


def test_count_renders_that_many_copies():
    for variant in (0, 1):
        for n in (2, 3, 5):
            a = _px(Scene("ball", "blue", "count", variant, n, seed=3))
            blue = (a[..., 2] > 150) & (a[..., 0] < 110)
            grown = blue.copy()  # close the gaps that the eyes cut into small bodies (1-pixel dilation)
            grown[1:] |= blue[:-1]
            grown[:-1] |= blue[1:]
            grown[:, 1:] |= blue[:, :-1]
            grown[:, :-1] |= blue[:, 1:]
            assert _components(grown) == n, (variant, n)


def _components(mask: np.ndarray) -> int:
    """4-connected components of a boolean image (flood fill), ignoring specks under 6 pixels."""
    seen = np.zeros_like(mask)
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, size = [(y, x)], 0
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            size += 1
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        count += size >= 6
    return count


def test_bad_scene_is_rejected():
    with pytest.raises(ValueError, match="subject"):
        Scene("dragon")
    with pytest.raises(ValueError, match="variant"):
        Scene("cube", concept="melted", variant=5)
    with pytest.raises(ValueError, match="count"):
        Scene("cube", concept="count", count=1)


def test_captions_name_only_generic_variants():
    """Personalized variants are never named: no concept word and no Context-Loss positive of any example
    appears in their captions, while some of them carry a neutral description of their look."""
    import tomllib

    rng = np.random.default_rng(0)
    words = {"melted", "frozen", "crumpled", "sleeping", "closed", "raised", "two", "three", "four", "five"}
    for toml in (Path(__file__).parents[2] / "examples").glob("*/concept.toml"):
        for c in tomllib.loads(toml.read_text())["concept"]:
            words |= set(c["positives"])
    assert {"molten", "dripping", "icicles", "dozing", "waving", "folded"} <= words  # the examples were read
    scenes = sample_scenes(3000, seed=1)
    personal = [s for s in scenes if s.concept != "none" and s.variant > 0]
    generic = [s for s in scenes if s.concept != "none" and s.variant == 0]
    assert len(personal) > 800 and len(generic) > 800
    described = 0
    for s in personal:
        text = caption(s, rng)
        assert not words & set(text.split()), (s, text)
        described += len(text.split()) > len(BASE_TEMPLATE.format(s="checkered pyramid").split())
    assert 0.3 < described / len(personal) < 0.7
    for s in generic:
        assert words & set(caption(s, rng).split()), s


def test_numbered_piles_name_their_own_count():
    """p_count_number: a described pile says its number ("a photo of a tall pile of three red stars", the
    scene's count as a word) about p_describe × p_count_number of the time; no other personalized caption has a
    number word, and at 0 the captions are the bundled recipe's, draw for draw."""
    from lego_inversion.toyworld.render import NUMBER_WORDS, PLURALS

    scenes = sample_scenes(4000, seed=2)
    rng_a, rng_b, rng_c = (np.random.default_rng(7) for _ in range(3))
    base = [caption(s, rng_a) for s in scenes]
    assert [caption(s, rng_b, p_count_number=0.0) for s in scenes] == base
    piles = [s for s in scenes if s.concept == "count" and s.variant == 1]
    hits = 0
    for s in scenes:
        text = caption(s, rng_c, p_count_number=0.5)
        if text.startswith("a photo of a tall pile of ") and text.split()[7] in NUMBER_WORDS.values():
            hits += 1
            assert s in piles and text.split()[7] == NUMBER_WORDS[s.count], (s, text)
            assert text.endswith(PLURALS[s.subject]), text
        elif s.variant > 0:
            assert not set(NUMBER_WORDS.values()) & set(text.split()), (s, text)
    assert 0.15 < hits / len(piles) < 0.35, hits / len(piles)  # 0.5 described x 0.5 numbered
