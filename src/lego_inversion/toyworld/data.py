"""Training data for the toy world: scene sampling, captions, and cached text embeddings.

    from lego_inversion.toyworld.data import sample_scenes, caption
    scenes = sample_scenes(1000, seed=0)      # the training distribution
    caption(scene, rng)                       # its caption (never names a personalized variant)

Captions name the concept only for the generic variant 0; personalized variants (>= 1) get the plain subject
caption, so text reaches only the generic concept and inversion must find the personalized one (Fig. 2 of Lego).
"""

from __future__ import annotations

import numpy as np

from .render import APPEARANCES, CONCEPTS, NUMBER_WORDS, PLURALS, SUBJECTS, Scene

P_NONE, P_GENERIC, P_PERSONAL = 0.40, 0.45, 0.15  # mixture of the training set
P_COLOUR_WORD = 0.8  # captions name the appearance this often

# concept -> caption templates; {s} is "[appearance ]subject"
CONCEPT_TEMPLATES = {
    "melted": ["a photo of a {s} that is melted", "a photo of a melted {s}"],
    "frozen": ["a photo of a {s} that is frozen", "a photo of a frozen {s}"],
    "crumpled": ["a photo of a {s} that is crumpled", "a photo of a crumpled {s}"],
    "sleeping": ["a photo of a {s} that is sleeping", "a photo of a sleeping {s}",
                 "a photo of a {s} with closed eyes"],
    "arms_raised": ["a photo of a {s} with raised arms", "a photo of a {s} with arms raised"],
}
BASE_TEMPLATE = "a photo of a {s}"
COUNT_TEMPLATE = "a photo of {n} {s}"


def sample_scene(rng: np.random.Generator, seed: int) -> Scene:
    """One scene from the training mixture (none / generic concept / unnamed personalized variant)."""
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    appearance = APPEARANCES[rng.integers(len(APPEARANCES))]
    u = rng.random()
    if u < P_NONE:
        return Scene(subject, appearance, seed=seed)
    concept = list(CONCEPTS)[rng.integers(len(CONCEPTS))]
    variant = 0 if u < P_NONE + P_GENERIC else int(rng.integers(1, CONCEPTS[concept]))
    count = int(rng.integers(2, 6)) if concept == "count" else 1
    return Scene(subject, appearance, concept, variant, count, seed=seed)


def sample_scenes(n: int, seed: int) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, seed=int(rng.integers(2**31))) for _ in range(n)]


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """The training caption of `scene`: names subject (+ appearance), and the concept only if generic."""
    adj = scene.appearance + " " if rng.random() < P_COLOUR_WORD else ""
    if scene.concept == "none" or scene.variant != 0:
        return BASE_TEMPLATE.format(s=adj + scene.subject)
    if scene.concept == "count":
        return COUNT_TEMPLATE.format(n=NUMBER_WORDS[scene.count], s=adj + PLURALS[scene.subject])
    templates = CONCEPT_TEMPLATES[scene.concept]
    return templates[rng.integers(len(templates))].format(s=adj + scene.subject)


def generic_prompt(subject: str, appearance: str | None, concept: str, count: int = 3) -> str:
    """The canonical prompt for a generic concept (used to measure the quality bar)."""
    adj = appearance + " " if appearance else ""
    if concept == "none":
        return BASE_TEMPLATE.format(s=adj + subject)
    if concept == "count":
        return COUNT_TEMPLATE.format(n=NUMBER_WORDS[count], s=adj + PLURALS[subject])
    return CONCEPT_TEMPLATES[concept][0].format(s=adj + subject)
