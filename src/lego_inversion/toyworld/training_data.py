"""The toy model's training data: the scene mixture it is trained on and the caption of each scene.

    from lego_inversion.toyworld.training_data import sample_scenes, caption
    scenes = sample_scenes(1000, seed=0)      # the training distribution
    caption(scene, rng)                       # its caption (never names a personalized variant)

Captions name the concept only for the generic variant 0, so text reaches only the generic concept and inversion
must find the personalized one (Fig. 2 of Lego). A personalized variant (>= 1) gets the plain subject caption or,
with probability `P_DESCRIBE`, a caption that describes its look in neutral words (`VARIANT_CAPTIONS`) that are
neither the concept's name, its synonyms, nor any word of the examples' Context-Loss positives. This mirrors web
captions (a specific look is sometimes described, never named) and gives the small UNet a direction in text space
for the personalized look: a model trained on plain captions only cannot draw those looks from any embedding, so
inversion has nothing to find (measured in docs/toyworld_benchmark.md; the two training stages are recorded in
weights/model/training.json).
"""

from __future__ import annotations

import numpy as np

from ..prompts import fill
from .render import APPEARANCES, CONCEPTS, NUMBER_WORDS, PLURALS, SUBJECTS, Scene

P_NONE, P_GENERIC = 0.30, 0.35  # mixture of the training set; the other 35 % are personalized variants
P_COLOUR_WORD = 0.8  # captions name the appearance this often
P_DESCRIBE = 0.5  # a personalized variant's caption describes its look (never names it) this often

# Caption templates, filled by `lego_inversion.prompts.fill`: {s} is "[appearance ]subject", {p} the same with
# the plural subject, {n} the number word of a count.
CONCEPT_TEMPLATES = {  # concept -> the captions that name its generic variant
    "melted": ["a photo of a {s} that is melted", "a photo of a melted {s}"],
    "frozen": ["a photo of a {s} that is frozen", "a photo of a frozen {s}"],
    "crumpled": ["a photo of a {s} that is crumpled", "a photo of a crumpled {s}"],
    "sleeping": ["a photo of a {s} that is sleeping", "a photo of a sleeping {s}",
                 "a photo of a {s} with closed eyes"],
    "arms_raised": ["a photo of a {s} with raised arms", "a photo of a {s} with arms raised"],
}
# (concept, variant) -> a neutral description of the personalized look
VARIANT_CAPTIONS = {
    ("melted", 1): "a photo of a {s} leaning sideways with wavy ripples",
    ("frozen", 1): "a photo of a whitened {s} with spikes hanging underneath",
    ("crumpled", 1): "a photo of a narrow {s} with accordion pleats",
    ("sleeping", 1): "a photo of a tilted {s} with curved eyelids",
    ("arms_raised", 1): "a photo of a {s} with one hand up",
    ("count", 1): "a photo of a tall pile of {p}",
}
# A described pile that names its number (TrainConfig.p_count_number; 0 in the bundled model's recipe)
NUMBERED_PILE = "a photo of a tall pile of {n} {p}"
BASE_TEMPLATE = "a photo of a {s}"
COUNT_TEMPLATE = "a photo of {n} {p}"
PLACEHOLDERS = ("s", "p", "n")


def _fill(template: str, subject: str, appearance: str | None, count: int = 1) -> str:
    adj = appearance + " " if appearance else ""
    values = {"s": adj + subject, "p": adj + PLURALS[subject], "n": NUMBER_WORDS.get(count, str(count))}
    return fill(template, values, where="toyworld caption template")


def sample_scene(rng: np.random.Generator, seed: int, p_none: float = P_NONE,
                 p_generic: float = P_GENERIC) -> Scene:
    """One scene from the training mixture (none / generic concept / personalized variant, 1 - p_none - p_generic)."""
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    appearance = APPEARANCES[rng.integers(len(APPEARANCES))]
    u = rng.random()
    if u < p_none:
        return Scene(subject, appearance, seed=seed)
    concept = list(CONCEPTS)[rng.integers(len(CONCEPTS))]
    variant = 0 if u < p_none + p_generic else int(rng.integers(1, CONCEPTS[concept]))
    count = int(rng.integers(2, 6)) if concept == "count" else 1
    return Scene(subject, appearance, concept, variant, count, seed=seed)


def sample_scenes(n: int, seed: int, p_none: float = P_NONE, p_generic: float = P_GENERIC) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, int(rng.integers(2**31)), p_none, p_generic) for _ in range(n)]


def caption(scene: Scene, rng: np.random.Generator, p_describe: float = P_DESCRIBE,
            p_count_number: float = 0.0) -> str:
    """The training caption of `scene`: names subject (+ appearance), and the concept only if generic;
    a personalized variant is described in neutral words with probability `p_describe` (0: never, and then no
    random number is drawn for it, so p_describe=0 gives the plain-caption mixture of the first training stage
    in weights/model/training.json). A described pile names its number with probability `p_count_number`
    (`NUMBERED_PILE`; 0: never, and no random number is drawn, so the bundled recipe's captions are unchanged):
    without it no caption ties a pile to a number, and no words draw a pile of N (docs/inversion_quality.md)."""
    appearance = scene.appearance if rng.random() < P_COLOUR_WORD else None
    if scene.concept != "none" and scene.variant != 0 and p_describe > 0 and rng.random() < p_describe:
        if scene.concept == "count" and p_count_number > 0 and rng.random() < p_count_number:
            return _fill(NUMBERED_PILE, scene.subject, appearance, scene.count)
        return described_prompt(scene.subject, appearance, scene.concept, scene.variant)
    if scene.concept == "none" or scene.variant != 0:
        return _fill(BASE_TEMPLATE, scene.subject, appearance)
    if scene.concept == "count":
        return _fill(COUNT_TEMPLATE, scene.subject, appearance, scene.count)
    templates = CONCEPT_TEMPLATES[scene.concept]
    return _fill(templates[rng.integers(len(templates))], scene.subject, appearance)


def generic_prompt(subject: str, appearance: str | None, concept: str, count: int = 3) -> str:
    """The canonical prompt for a generic concept (used to measure the quality bar)."""
    if concept == "none":
        return _fill(BASE_TEMPLATE, subject, appearance)
    if concept == "count":
        return _fill(COUNT_TEMPLATE, subject, appearance, count)
    return _fill(CONCEPT_TEMPLATES[concept][0], subject, appearance)


def described_prompt(subject: str, appearance: str | None, concept: str, variant: int) -> str:
    """The neutral description of a personalized look (`VARIANT_CAPTIONS`), for `subject`."""
    return _fill(VARIANT_CAPTIONS[(concept, variant)], subject, appearance)
