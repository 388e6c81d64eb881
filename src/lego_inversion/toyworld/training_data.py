"""Training data for the toy world: scene sampling, captions, and cached text embeddings.

    from lego_inversion.toyworld.data import sample_scenes, caption
    scenes = sample_scenes(1000, seed=0)      # the training distribution
    caption(scene, rng)                       # its caption (never names a personalized variant)

Captions name the concept only for the generic variant 0, so text reaches only the generic concept and inversion
must find the personalized one (Fig. 2 of Lego). A personalized variant (>= 1) gets the plain subject caption or,
with probability `P_DESCRIBE`, a caption that describes its look in neutral words (`VARIANT_CAPTIONS`) that are
neither the concept's name, its synonyms, nor any word of the examples' Context-Loss positives. This mirrors web
captions (a specific look is sometimes described, never named) and gives the small UNet a direction in text space
for the personalized look; with plain captions only, no inversion setting reached the variants (issue 4 note,
docs/toyworld_benchmark.md).
"""

from __future__ import annotations

import numpy as np

from .render import APPEARANCES, CONCEPTS, NUMBER_WORDS, PLURALS, SUBJECTS, Scene

P_NONE, P_GENERIC = 0.30, 0.35  # mixture of the training set; the other 35 % are personalized variants
P_COLOUR_WORD = 0.8  # captions name the appearance this often
P_DESCRIBE = 0.5  # a personalized variant's caption describes its look (never names it) this often

# concept -> caption templates; {s} is "[appearance ]subject"
CONCEPT_TEMPLATES = {
    "melted": ["a photo of a {s} that is melted", "a photo of a melted {s}"],
    "frozen": ["a photo of a {s} that is frozen", "a photo of a frozen {s}"],
    "crumpled": ["a photo of a {s} that is crumpled", "a photo of a crumpled {s}"],
    "sleeping": ["a photo of a {s} that is sleeping", "a photo of a sleeping {s}",
                 "a photo of a {s} with closed eyes"],
    "arms_raised": ["a photo of a {s} with raised arms", "a photo of a {s} with arms raised"],
}
# (concept, variant) -> a neutral description of the personalized look; {s} as above, {p} the plural subject
VARIANT_CAPTIONS = {
    ("melted", 1): "a photo of a {s} leaning sideways with wavy ripples",
    ("frozen", 1): "a photo of a whitened {s} with spikes hanging underneath",
    ("crumpled", 1): "a photo of a narrow {s} with accordion pleats",
    ("sleeping", 1): "a photo of a tilted {s} with curved eyelids",
    ("arms_raised", 1): "a photo of a {s} with one hand up",
    ("count", 1): "a photo of a tall pile of {p}",
}
BASE_TEMPLATE = "a photo of a {s}"
COUNT_TEMPLATE = "a photo of {n} {s}"


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


def caption(scene: Scene, rng: np.random.Generator, p_describe: float = P_DESCRIBE) -> str:
    """The training caption of `scene`: names subject (+ appearance), and the concept only if generic;
    a personalized variant is described in neutral words with probability `p_describe` (0: never, and no
    random number is drawn, so p_describe=0 reproduces the captions of the first bundled model)."""
    adj = scene.appearance + " " if rng.random() < P_COLOUR_WORD else ""
    if scene.concept != "none" and scene.variant != 0 and p_describe > 0 and rng.random() < p_describe:
        template = VARIANT_CAPTIONS[(scene.concept, scene.variant)]
        return template.format(s=adj + scene.subject, p=adj + PLURALS[scene.subject])
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
