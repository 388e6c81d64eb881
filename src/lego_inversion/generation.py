"""Apply learned concepts to new subjects and compose several in one prompt (Lego §5.4, Fig. 8).

    from lego_inversion.generation import load_generator
    gen = load_generator(None, ["runs/melted", "runs/frozen"])       # toy model + two concepts
    images = gen.generate(["a photo of a sphere that is {melted}"], seeds=[0])
    gen.expand_prompt("a {melted} and {frozen} bear")   # -> "a <melted> and <frozen> <ice> bear"

Prompt syntax: `{name}` is a whole concept (all its tokens, in order); `{name.subject}` is its subject token;
with exactly one concept loaded, `{concept}` and `{subject}` work too. Single tokens (`<melted>`) can be written
directly. Image i starts from noise drawn only from `seeds[i]`, so the same seed gives the same noise whatever
the batch or the method: comparisons across methods see identical noise.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .backbones import Backbone, load_backbone
from .errors import UserError
from .formats import LearnedConcept, load_learned

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class ConceptGenerator:
    """A backbone with learned concepts loaded into its text encoder(s)."""

    def __init__(self, backbone: Backbone, concepts: Sequence[LearnedConcept] = ()):
        self.backbone = backbone
        self.concepts: dict[str, LearnedConcept] = {}
        for concept in concepts:
            self.add_concept(concept)

    def add_concept(self, concept: LearnedConcept) -> None:
        if concept.name in self.concepts:
            raise UserError(f"two concepts are named {concept.name!r}; rename one (name = ... in concept.toml)")
        if len(concept.slots) != len(self.backbone.slots):
            raise UserError(f"concept {concept.name!r} was learned for {len(concept.slots)} text encoder(s) but "
                            f"{self.backbone.model_id} has {len(self.backbone.slots)}; use its base model "
                            f"({concept.meta.get('base_model', 'unknown')})")
        dims = [s.ext.embedding_dim for s in self.backbone.slots]
        got = [v.shape[-1] for v in next(iter(concept.vectors.values()))]
        if dims != got:
            raise UserError(f"concept {concept.name!r} has embeddings of size {got} but {self.backbone.model_id} "
                            f"expects {dims}; use its base model ({concept.meta.get('base_model', 'unknown')})")
        loaded = {t for c in self.concepts.values() for t in c.all_tokens}
        clash = [t for t in concept.tokens if t in loaded]
        if clash:
            raise UserError(f"concept {concept.name!r} reuses token {clash[0]!r} of another loaded concept; "
                            "concept tokens must be unique across composed concepts")
        tokens = list(concept.tokens)
        if concept.subject_token and concept.subject_token not in loaded:
            tokens.insert(0, concept.subject_token)
        elif concept.subject_token:  # two runs both called their subject <subj>: keep the first, say so
            print(f"lego: note: subject token {concept.subject_token} of {concept.name!r} is already taken; "
                  f"{{{concept.name}.subject}} is unavailable", file=sys.stderr)
            concept = LearnedConcept(concept.name, concept.tokens, None, concept.vectors, concept.slots, concept.meta)
        self.backbone.add_tokens(tokens, [concept.vectors[t] for t in tokens])
        self.concepts[concept.name] = concept

    def expand_prompt(self, prompt: str) -> str:
        """Replace `{name}`, `{name.subject}`, `{concept}`, `{subject}` with token strings."""

        def replace(match: re.Match) -> str:
            key = match.group(1).strip()
            name, _, part = key.partition(".")
            if name in ("concept", "subject") and not part and name not in self.concepts:
                if len(self.concepts) != 1:
                    raise UserError(f"prompt uses {{{key}}} but {len(self.concepts)} concepts are loaded; name "
                                    f"one: {', '.join('{' + n + '}' for n in self.concepts) or '(none)'}")
                name, part = next(iter(self.concepts)), ("subject" if name == "subject" else "")
            concept = self.concepts.get(name)
            if concept is None or part not in ("", "subject"):
                known = ", ".join("{" + n + "}" for n in self.concepts) or "none loaded"
                raise UserError(f"prompt placeholder {{{key}}} names no loaded concept (known: {known})")
            if part == "subject":
                if not concept.subject_token:
                    raise UserError(f"concept {name!r} has no subject token (method {concept.meta.get('method')})")
                return concept.subject_token
            return " ".join(concept.tokens)

        return _PLACEHOLDER.sub(replace, prompt)

    def initial_latents(self, seeds: Sequence[int], resolution: int | None = None) -> torch.Tensor:
        """One noise tensor per seed, each from its own generator (batch-independent)."""
        shape = self.backbone.latent_shape(1, resolution or self.backbone.resolution)
        return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    def generate(self, prompts: list[str], seeds: list[int], num_inference_steps: int = 50,
                 guidance_scale: float | None = None, batch_size: int = 4, progress: bool = True,
                 resolution: int | None = None, negative_prompt: str | None = None) -> list:
        """One PIL image per (prompt, seed) pair."""
        if len(prompts) != len(seeds):
            raise UserError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
        expanded = [self.expand_prompt(p) for p in prompts]
        images = []
        starts = range(0, len(expanded), batch_size)
        for start in tqdm(starts, disable=not progress or len(starts) < 2, desc="lego generate"):
            chunk = slice(start, start + batch_size)
            latents = self.initial_latents(seeds[chunk], resolution)
            images += self.backbone.sample(expanded[chunk], latents, num_inference_steps=num_inference_steps,
                                           guidance_scale=guidance_scale, negative_prompt=negative_prompt)
        return images


def load_generator(model: str | None = None, concepts: Sequence[str | Path] = (), device: str | None = None,
                   dtype: str = "float32", allow_pickle: bool = False) -> ConceptGenerator:
    """Load a backbone (None = the toy model) and the learned concept folders to apply to it."""
    learned = [load_learned(c) for c in concepts]
    if model is None and learned:  # default to the model the concepts were learned on, when it is local
        bases = {c.meta.get("base_model") for c in learned}
        base = bases.pop() if len(bases) == 1 else None
        if base and Path(base).is_dir():
            model = base
    backbone = load_backbone(model, device=device, dtype=dtype, allow_pickle=allow_pickle)
    return ConceptGenerator(backbone, learned)
