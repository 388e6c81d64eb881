"""Apply learned concepts to new subjects and compose several in one prompt (Lego §5.4, Fig. 8).

    from lego_inversion.generation import check_output_folder, load_generator, write_image_set
    gen = load_generator(None, ["runs/melted", "runs/frozen"])       # toy model + two concepts
    images = gen.generate(["a photo of a sphere that is {melted}"], seeds=[0])
    images = gen.generate(["a photo of a ball that is melted"], [0], excite=["ball", "melted"])  # Attend-and-Excite
    gen.expand_prompt("a {melted} and {frozen} bear")   # -> "a <melted> and <frozen> <ice> bear"
    check_output_folder(out, overwrite=False)            # before any work: `lego generate --out`
    write_image_set(out, images, records, cols=4)        # PNGs + images.jsonl + grid.png, swapped in whole

Prompt syntax (filled by `lego_inversion.prompts`): `{name}` is a whole concept (all its tokens, in order) and
`{name.subject}` its subject token. `name` is the concept's name (`name =` in its concept.toml, else its concept
folder's name) or its run folder's name (`{melted}` for `--concept runs/melted`) when that differs and no other
loaded concept claims it. With exactly one concept loaded, `{concept}` and `{subject}` work too; `{{`/`}}` are
literal braces and single tokens (`<melted>`) can be written directly. Image i starts from noise drawn only from
`seeds[i]`, so the same seed gives the same noise whatever the batch or the method: comparisons across methods
see identical noise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .attend_excite import ExciteSettings, attend_and_excite, token_positions
from .backbones import Backbone, load_backbone, resolve_model
from .errors import UserError
from .formats import LearnedConcept, load_learned
from .guidance import check_floor, check_scales, concept_free_prompts, concept_guidance
from .manifest import MANIFEST, ImageRecord, read_manifest, write_manifest
from .prompts import fill, placeholders

logger = logging.getLogger(__name__)
GRID = "grid.png"
_ALIAS = re.compile(r"^[A-Za-z0-9_\-]+$")  # a run folder name usable as a placeholder


class ConceptGenerator:
    """A backbone with learned concepts loaded into its text encoder(s)."""

    def __init__(self, backbone: Backbone, concepts: Sequence[LearnedConcept] = ()):
        self.backbone = backbone
        self.concepts: dict[str, LearnedConcept] = {}
        self.aliases: dict[str, str] = {}        # run folder name -> concept name
        self._ambiguous: set[str] = set()        # run folder names shared by several loaded concepts
        self._subject_owner: dict[str, str] = {}  # concept whose subject token was taken -> the concept holding it
        self.excite_log: list[list[dict]] = []   # Attend-and-Excite per-step losses of the last generate()
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
        loaded = {t: c.name for c in self.concepts.values() for t in c.all_tokens}
        clash = [t for t in concept.tokens if t in loaded]
        if clash:
            raise UserError(f"concept {concept.name!r} reuses token {clash[0]!r} of another loaded concept; "
                            "concept tokens must be unique across composed concepts")
        tokens = list(concept.tokens)
        if concept.subject_token and concept.subject_token not in loaded:
            tokens.insert(0, concept.subject_token)
        elif concept.subject_token:  # two runs both called their subject <subj>: keep the first, say so
            logger.warning("subject token %s of concept %r is already taken by %r; {%s.subject} is unavailable",
                           concept.subject_token, concept.name, loaded[concept.subject_token], concept.name)
            self._subject_owner[concept.name] = loaded[concept.subject_token]
            concept = dataclasses.replace(concept, subject_token=None)
        self.backbone.add_tokens(tokens, [concept.vectors[t] for t in tokens])
        self.concepts[concept.name] = concept
        self._add_alias(concept)

    def _add_alias(self, concept: LearnedConcept) -> None:
        """Make the concept addressable by its run folder's name too, unless another concept claims that name."""
        if concept.name in self.aliases:  # a concept's own name wins over another one's run folder name
            other = self.aliases.pop(concept.name)
            logger.warning("{%s} now means concept %r, not the one in run folder %s; write {%s} for that one",
                           concept.name, concept.name, concept.name, other)
        alias = concept.source.name if concept.source is not None else ""
        if not _ALIAS.match(alias) or alias == concept.name or alias in self.concepts or alias in self._ambiguous:
            return
        if alias in self.aliases:  # two run folders of the same name: neither gets it
            self._ambiguous.add(alias)
            del self.aliases[alias]
            return
        self.aliases[alias] = concept.name

    def placeholder_values(self) -> dict[str, str]:
        """Every placeholder a prompt may use -> its token string."""
        values = {}
        if len(self.concepts) == 1:
            [only] = self.concepts.values()
            values["concept"] = " ".join(only.tokens)
            if only.subject_token:
                values["subject"] = only.subject_token
        for key, name in [(n, n) for n in self.concepts] + list(self.aliases.items()):
            concept = self.concepts[name]
            values[key] = " ".join(concept.tokens)
            if concept.subject_token:
                values[f"{key}.subject"] = concept.subject_token
        return values

    def expand_prompt(self, prompt: str, where: str = "prompt") -> str:
        """Replace `{name}`, `{name.subject}`, `{concept}`, `{subject}` with token strings."""
        values = self.placeholder_values()
        for key in placeholders(prompt, where):
            if key not in values:
                raise self._unknown(key, where)
        return fill(prompt, values, where)

    def _unknown(self, key: str, where: str) -> UserError:
        """The error for a placeholder the loaded concepts do not provide, saying which ones they do."""
        names = list(self.concepts) + list(self.aliases)
        name, _, part = key.partition(".")
        name = self.aliases.get(name, name)
        if key in ("concept", "subject") and len(self.concepts) != 1:
            return UserError(f"{where} uses {{{key}}} but {len(self.concepts)} concepts are loaded; name one: "
                             f"{', '.join('{' + n + '}' for n in names) or '(none)'}")
        if key == "subject" or (part == "subject" and name in self.concepts):
            concept = self.concepts[name] if part else next(iter(self.concepts.values()))
            if concept.name in self._subject_owner:
                return UserError(f"{where} uses {{{key}}} but concept {concept.name!r} shares its subject token with "
                                 f"{self._subject_owner[concept.name]!r}; write "
                                 f"{{{self._subject_owner[concept.name]}.subject}}")
            return UserError(f"{where} uses {{{key}}} but concept {concept.name!r} has no subject token "
                             f"(method {concept.meta.get('method')})")
        known = ", ".join("{" + n + "}" for n in names) or "none loaded"
        return UserError(f"{where} placeholder {{{key}}} names no loaded concept (known: {known})")

    def initial_latents(self, seeds: Sequence[int], resolution: int | None = None) -> torch.Tensor:
        """One noise tensor per seed, each from its own generator (batch-independent)."""
        shape = self.backbone.latent_shape(1, resolution or self.backbone.resolution)
        return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    def excite_positions(self, prompts: list[str], excite, where: str = "--attend-and-excite") -> list[list[int]]:
        """Token positions to excite in each (unexpanded) prompt. `excite`: words for every prompt, or one list
        of words per prompt; a word may be a `{placeholder}` (its concept's tokens) or a token (`<melted>`)."""
        per_prompt = [list(excite)] * len(prompts) if excite and isinstance(excite[0], str) else list(excite)
        if len(per_prompt) != len(prompts):
            raise UserError(f"{where}: got {len(per_prompt)} word lists for {len(prompts)} prompts")
        out = []
        for prompt, words in zip(prompts, per_prompt):
            if not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise UserError(f"{where}: name at least one word of the prompt {prompt!r} to excite")
            tokens = [self.expand_prompt(w, where=where) for w in words]
            out.append(token_positions(self.backbone, self.expand_prompt(prompt), tokens, where=where))
        return out

    def generate(self, prompts: list[str], seeds: list[int], num_inference_steps: int = 50,
                 guidance_scale: float | None = None, batch_size: int = 4, progress: bool = True,
                 resolution: int | None = None, negative_prompt: str | None = None, excite=None,
                 excite_settings: ExciteSettings | None = None, concept_guidance_scale: float | None = None,
                 concept_floor: float | None = None) -> list:
        """One PIL image per (prompt, seed) pair. With `excite` (words for every prompt, or a list of words per
        prompt) the pipeline runs Attend-and-Excite (`attend_excite`, Chefer et al. 2023) on those words;
        `self.excite_log` then holds each batch's per-step losses. `concept_guidance_scale` guides the learned
        concepts' tokens at their own scale (`guidance.py`; default: the ratio the runs chose, `select_guidance`,
        times the guidance scale, else the model's, off unless its lego_inversion.json sets it); `concept_floor`
        leaves them out of the steps below that fraction of the noise schedule (default: the model's, 0 unless its
        lego_inversion.json sets it)."""
        if len(prompts) != len(seeds):
            raise UserError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
        expanded = [self.expand_prompt(p) for p in prompts]
        positions = self.excite_positions(prompts, excite) if excite is not None else None  # fails before work
        concept_scale, scale = self.concept_scale(concept_guidance_scale, guidance_scale, excite is not None)
        floor = self.concept_floor(concept_floor, scale, excite is not None)
        settings = excite_settings or ExciteSettings()
        self.excite_log = []
        if not progress:  # the pipeline's own per-step bar too
            self.backbone.pipe.set_progress_bar_config(disable=True)
        images = []
        starts = range(0, len(expanded), batch_size)
        for start in tqdm(starts, disable=not progress or len(starts) < 2, desc="lego generate"):
            chunk = slice(start, start + batch_size)
            latents = self.initial_latents(seeds[chunk], resolution)
            with contextlib.ExitStack() as stack:
                if positions is not None:
                    exciter = stack.enter_context(attend_and_excite(self.backbone, positions[chunk], settings,
                                                                    latents.shape))
                    self.excite_log.append(exciter.log)
                if concept_scale is not None or floor:
                    free = concept_free_prompts(expanded[chunk], self.concept_tokens)
                    stack.enter_context(concept_guidance(self.backbone, free, scale,
                                                         scale if concept_scale is None else concept_scale, floor))
                images += self.backbone.sample(expanded[chunk], latents, num_inference_steps=num_inference_steps,
                                               guidance_scale=guidance_scale, negative_prompt=negative_prompt)
        return images

    def chosen_concept_guidance(self, scale: float) -> float | None:
        """The default concept guidance scale: the ratio the loaded runs chose (`select_guidance`) times `scale`,
        else the model's. Runs that chose different ratios are composed with the model's, and this is logged."""
        ratios = {c.meta.get("concept_guidance_ratio") for c in self.concepts.values()}
        if len(ratios) > 1:
            logger.info("the loaded concepts chose different concept guidance ratios (%s); using the model's "
                        "guidance; pass --concept-guidance-scale to set one", ", ".join(sorted(map(str, ratios))))
        elif ratios and (ratio := ratios.pop()) is not None:
            return float(ratio) * scale
        return self.backbone.default_concept_guidance_scale

    @property
    def concept_tokens(self) -> list[str]:
        """The loaded concepts' concept tokens (not their subject tokens): what concept guidance guides."""
        return [t for c in self.concepts.values() for t in c.tokens]

    def concept_scale(self, given: float | None, guidance_scale: float | None,
                      excite: bool) -> tuple[float | None, float]:
        """(the concept guidance scale to apply, or None for plain guidance; the guidance scale). Given without
        a learned concept, with Attend-and-Excite or without guidance, it is an error; a default is then left off."""
        scale = self.backbone.default_guidance_scale if guidance_scale is None else guidance_scale
        where = "--concept-guidance-scale"
        if given is not None:
            self._check_hookable(where, "guides learned concept tokens", excite)
        value = given if given is not None else self.chosen_concept_guidance(scale)
        if value is None or not self.concepts or excite or (given is None and scale <= 1):
            return None, scale
        check_scales(scale, value, where)
        return (None if value == scale else value), scale

    def concept_floor(self, given: float | None, scale: float, excite: bool) -> float:
        """The concept floor to apply (0: none; guidance.py), by the same rules as `concept_scale`."""
        where = "--concept-floor"
        if given:
            self._check_hookable(where, "leaves learned concept tokens out of late steps", excite)
            check_scales(scale, 0.0, where)
        value = self.backbone.default_concept_floor if given is None else given
        check_floor(value, where)
        return value if self.concepts and not excite and scale > 1 else 0.0

    def _check_hookable(self, where: str, what: str, excite: bool) -> None:
        """A given option that hooks the UNet's guided calls needs learned concepts and no Attend-and-Excite."""
        if not self.concepts:
            raise UserError(f"{where} {what}; load one with --concept or leave {where} out")
        if excite:
            raise UserError(f"{where} and --attend-and-excite both hook the UNet's denoising calls; use one of them")


def default_model(concepts: Sequence[LearnedConcept]) -> str | None:
    """The base model the concepts were learned on, through `resolve_model` (None = the embedded toy model).

    Concepts learned on different base models need `--model`; a recorded local folder that no longer exists
    (a run copied from another machine) falls back to the toy model with a warning."""
    bases = {c.meta.get("base_model") for c in concepts} - {None, ""}
    if len(bases) > 1:
        raise UserError(f"the concepts were learned on different base models ({', '.join(sorted(map(str, bases)))}); "
                        "pass --model")
    if not bases:
        return None
    base = resolve_model(bases.pop())
    if Path(base).is_absolute() and not Path(base).is_dir():
        logger.warning("base model folder %s of the concepts is gone; using the embedded toy model (pass --model "
                       "to choose)", base)
        return None
    return base


def load_generator(model: str | None = None, concepts: Sequence[str | Path] = (), device: str | None = None,
                   dtype: str = "float32", allow_pickle: bool = False) -> ConceptGenerator:
    """Load a backbone (None = the concepts' base model, else the toy model) and the run folders to apply."""
    learned = [load_learned(c) for c in concepts]
    if model is None and learned:
        model = default_model(learned)
    backbone = load_backbone(model, device=device, dtype=dtype, allow_pickle=allow_pickle)
    _apply_unet_parts(backbone, learned)
    return ConceptGenerator(backbone, learned)


def _apply_unet_parts(backbone, learned) -> None:
    """A fine-tuning baseline's run (dreambooth, custom-diffusion) brings UNet parts: load them onto the backbone.
    At most one such run per generator: two fine-tuned UNets cannot be applied at once."""
    from .finetune import METHOD_FILES, apply_unet_parts

    tuned = [c for c in learned
             if c.source is not None and any((c.source / f).is_file() for f in METHOD_FILES.values())]
    if len(tuned) > 1:
        raise UserError(f"concepts {tuned[0].name!r} and {tuned[1].name!r} both fine-tuned the UNet; compose at most "
                        "one dreambooth / custom-diffusion run with learned-token runs")
    if tuned:
        apply_unet_parts(backbone, tuned[0].source)


def check_output_folder(out: Path, overwrite: bool = False) -> None:
    """UserError unless `out` is new or empty, or (with `overwrite`) holds only a previous image set.

    Run before any work, so that a refused `lego generate` writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; choose a folder path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"--out {out}: folder is not empty; pass --overwrite to replace its images, or choose a new "
                        "folder")
    ours = {MANIFEST, GRID}
    if (out / MANIFEST).is_file():
        ours |= {r.path.name for r in read_manifest(out / MANIFEST)}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours or not p.is_file())
    if foreign:
        raise UserError(f"--out {out}: holds {foreign[0]!r}, which is not part of a previous `lego generate` image "
                        "set; --overwrite replaces the whole folder, so move it or choose another --out")


def write_image_set(out: Path, images: list, records: list[ImageRecord], cols: int) -> Path:
    """Write images (named after `records[i].path.name`), images.jsonl and grid.png into a temporary sibling,
    then swap it onto `out`: the folder is always either the complete old set or the complete new one."""
    from .atomic import atomic_dir, atomic_save_image
    from .images import make_grid

    with atomic_dir(out) as tmp:
        placed = [dataclasses.replace(r, path=tmp / r.path.name) for r in records]
        for image, record in zip(images, placed):
            atomic_save_image(record.path, image)
        write_manifest(tmp, placed)
        atomic_save_image(tmp / GRID, make_grid(images, cols=cols))
    return Path(out) / GRID
