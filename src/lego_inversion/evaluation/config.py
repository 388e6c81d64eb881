"""Typed, validated configuration of `lego evaluate` (the automatic part of §5.3 / Table 2 of Lego).

    cfg = load_eval_config("eval.toml")                   # or EvalConfig(concepts=[...], targets=[...])
    cfg = config_from_concept_folders(["runs/frozen", "runs/frozen_ti"], targets=["toy bear"])

An evaluation config names concepts, the target subjects to apply them to and, per concept, one learned concept
folder per method (`lego invert` output; generation mode) or one existing image folder per method (scoring
mode). The method `text` is the paper's "LDM" column: the same prompt with the concept's natural-language
description instead of its learned tokens. See docs/evaluation.md for the full TOML schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..documents import read_document
from ..errors import UserError
from ..prompts import check_template

STANDARD_METRICS = ("vqa", "count", "clip", "dino")  # the paper's automatic measures and leakage (any model)
METRICS = (*STANDARD_METRICS, "oracle")  # oracle: toy-world models only (evaluation.oracle)
TEXT_METHOD = "text"
EXCITE_METHOD = "attend-excite"  # the text prompt with Attend-and-Excite on its words (only when named in methods)
DEFAULT_PROMPT = "a photo of a {target} {concept}"
DEFAULT_COUNT_PROMPT = "a photo of {concept} {target}"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class ModelsConfig:
    """Evaluator models (hub ids or local folders) and how they are run.

    `detector_threshold`: a detection counts when its sigmoid score is >= this (OWLv2's own examples use 0.1-0.3;
    0.3 keeps near-duplicate low-confidence boxes out); boxes overlapping by IoU > `nms_iou` are merged first.
    """

    vqa: str = "Salesforce/blip2-flan-t5-xl"
    detector: str = "google/owlv2-base-patch16-ensemble"
    clip: str = "openai/clip-vit-large-patch14"
    dino: str = "facebook/dinov2-base"
    detector_threshold: float = 0.3
    nms_iou: float = 0.5
    batch_size: int = 8
    device: str | None = None
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("vqa", "detector", "clip", "dino"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise UserError(f"models.{name}: give a hub id or local folder of the evaluator model")
        if not 0.0 < float(self.detector_threshold) <= 1.0:
            raise UserError(f"models.detector_threshold = {self.detector_threshold}: use a score in (0, 1]")
        if not 0.0 < float(self.nms_iou) <= 1.0:
            raise UserError(f"models.nms_iou = {self.nms_iou}: use an IoU in (0, 1]")
        if int(self.batch_size) < 1:
            raise UserError(f"models.batch_size = {self.batch_size}: use a positive integer")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise UserError(f"models.dtype = {self.dtype!r}: use float32, float16 or bfloat16")


@dataclass
class GenerationConfig:
    """How images are generated (generation mode); passed to `ConceptGenerator.generate`."""

    model: str | None = None  # base model; None: each concept folder's `base_model`
    num_inference_steps: int = 50
    guidance_scale: float | None = None
    concept_guidance_scale: float | None = None  # learned methods only (guidance.py); None: the model's default
    concept_floor: float | None = None  # learned methods only (guidance.py); None: the model's default
    batch_size: int = 4
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise UserError(f"generation.dtype = {self.dtype!r}: use float32, float16 or bfloat16")
        if int(self.num_inference_steps) < 1:
            raise UserError(f"generation.num_inference_steps = {self.num_inference_steps}: use >= 1")
        if int(self.batch_size) < 1:
            raise UserError(f"generation.batch_size = {self.batch_size}: use a positive integer")
        if self.concept_guidance_scale is not None and not float(self.concept_guidance_scale) >= 0:
            raise UserError(f"generation.concept_guidance_scale = {self.concept_guidance_scale}: use a scale >= 0")
        if self.concept_floor is not None:
            from ..guidance import check_floor

            check_floor(self.concept_floor, where="generation.concept_floor")


@dataclass
class FolderSpec:
    """An existing folder of images for one method: `images.jsonl` (from `lego generate`) or plain images."""

    path: Path
    target: str | None = None  # for plain folders: the target subject every image shows


@dataclass
class ConceptEntry:
    """One concept (a row of Table 2) with a learned folder or an image folder per method."""

    name: str
    methods: dict[str, Path] = field(default_factory=dict)
    folders: dict[str, FolderSpec] = field(default_factory=dict)
    description: str | None = None
    questions: list[str] = field(default_factory=list)
    count: int | None = None
    prompt: str | None = None
    exemplars: list[Path] = field(default_factory=list)
    targets: list[str] | None = None

    def __post_init__(self):
        where = f"concept {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise UserError(f"concepts.name = {self.name!r}: use letters, digits, '_', '-', '.' or '+'")
        if not self.methods and not self.folders:
            raise UserError(f"{where}: give `methods` (learned concept folders to generate with) or `folders` "
                            "(existing image folders to score)")
        if self.methods and self.folders:
            raise UserError(f"{where}: give either `methods` (generate) or `folders` (score existing), not both")
        for m in list(self.methods) + list(self.folders):
            if not _NAME_RE.match(m):
                raise UserError(f"{where}: method name {m!r} must use letters, digits, '_', '-', '.'")
        if self.count is not None and (not isinstance(self.count, int) or self.count < 0):
            raise UserError(f"{where}: count = {self.count!r} must be a non-negative integer")
        for q in self.questions:
            if not isinstance(q, str) or not q.strip():
                raise UserError(f"{where}: questions must be non-empty strings")
            check_template(q, {"target"}, where=f"{where}: questions")
        if self.prompt is not None:
            check_template(self.prompt, {"target", "concept"}, where=f"{where}: prompt",
                           required=("target", "concept"))


@dataclass
class EvalConfig:
    """Everything `lego evaluate` needs; validated on construction."""

    concepts: list[ConceptEntry]
    targets: list[str] = field(default_factory=list)
    methods: list[str] | None = None  # which methods, in report order; None: all found
    num_images: int = 200  # per concept x target x method (Table 2 of Lego uses 200 per concept)
    seed: int = 0  # image i uses seed + i, the same for every method
    metrics: list[str] | None = None  # None: chosen per run (plan.chosen_metrics): oracle for toy-world models
    grid_images: int = 4  # images per target per method in the HTML grids
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)

    def __post_init__(self):
        if not self.concepts:
            raise UserError("the evaluation config has no [[concepts]]: add at least one concept")
        names = [c.name for c in self.concepts]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise UserError(f"concepts: name {sorted(dup)[0]!r} appears twice; give each concept a unique name")
        if int(self.num_images) < 1:
            raise UserError(f"num_images = {self.num_images}: use a positive integer")
        bad = [m for m in self.metrics or () if m not in METRICS]
        if bad:
            raise UserError(f"metrics: unknown metric {bad[0]!r}; choose from {', '.join(METRICS)}")
        for t in self.targets:
            if not isinstance(t, str) or not t.strip():
                raise UserError("targets: each target subject must be a non-empty string, e.g. 'toy bear'")
        if int(self.grid_images) < 0:
            raise UserError(f"grid_images = {self.grid_images}: use 0 or more")


def _get(table: dict, key: str, types, where: str, default=None):
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, types):
        raise UserError(f"{where}: field `{key}` has the wrong type ({type(value).__name__})")
    return value


def _resolve(base: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base / path)


def load_eval_config(path: str | Path) -> EvalConfig:
    """Read an evaluation TOML (schema in docs/evaluation.md); relative paths are relative to the file."""
    path = Path(path)
    data = read_document(path, missing="pass an existing evaluation .toml file", fix="fix the syntax")
    base = path.parent
    known = {"concepts", "targets", "methods", "num_images", "seed", "metrics", "grid_images", "generation",
             "models"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{path}: unknown field `{unknown[0]}`; allowed: {', '.join(sorted(known))}")
    where = str(path)
    top = dict(targets=list(_get(data, "targets", list, where, [])), methods=_get(data, "methods", list, where),
               num_images=_get(data, "num_images", int, where, 200), seed=_get(data, "seed", int, where, 0),
               metrics=_get(data, "metrics", list, where),
               grid_images=_get(data, "grid_images", int, where, 4))
    try:
        gen = GenerationConfig(**_get(data, "generation", dict, where, {}))
        models = ModelsConfig(**_get(data, "models", dict, where, {}))
    except TypeError as exc:
        raise UserError(f"{path}: [generation] or [models] has an unknown field ({exc})") from None
    concepts = []
    for i, ct in enumerate(_get(data, "concepts", list, where, [])):
        where = f"{path}: concepts[{i}]"
        if not isinstance(ct, dict) or "name" not in ct:
            raise UserError(f"{where}: each [[concepts]] needs a `name`")
        folders = {}
        for m, spec in _get(ct, "folders", dict, where, {}).items():
            if isinstance(spec, str):
                folders[m] = FolderSpec(_resolve(base, spec))
            elif isinstance(spec, dict) and isinstance(spec.get("path"), str):
                folders[m] = FolderSpec(_resolve(base, spec["path"]), spec.get("target"))
            else:
                raise UserError(f"{where}: folders.{m} must be a path or {{path = ..., target = ...}}")
        methods = {m: _resolve(base, p) for m, p in _get(ct, "methods", dict, where, {}).items()}
        fields = dict(
            name=ct["name"], methods=methods, folders=folders,
            description=_get(ct, "description", str, where), questions=list(_get(ct, "questions", list, where, [])),
            count=_get(ct, "count", int, where), prompt=_get(ct, "prompt", str, where),
            exemplars=[_resolve(base, p) for p in _get(ct, "exemplars", list, where, [])],
            targets=_get(ct, "targets", list, where))
        try:
            concepts.append(ConceptEntry(**fields))
        except UserError as exc:  # name the file and entry: the entry itself only knows the concept's name
            raise UserError(f"{where}: {exc}") from None
    return EvalConfig(concepts=concepts, generation=gen, models=models, **top)


def read_concept_json(folder: Path) -> dict:
    """Read `concept.json` of a learned concept folder (`lego invert` output)."""
    path = Path(folder) / "concept.json"
    data = read_document(path, missing="not a learned concept folder; run `lego invert` first",
                         fix="re-run `lego invert`")
    if not isinstance(data.get("name"), str):
        raise UserError(f"{path}: field `name` is missing; re-run `lego invert`")
    return data


def config_from_concept_folders(folders: list[str | Path], **kwargs) -> EvalConfig:
    """Group learned concept folders by their concept.json `name`; the method comes from its `method` field."""
    groups: dict[str, dict[str, Path]] = {}
    for folder in folders:
        folder = Path(folder)
        meta = read_concept_json(folder)
        method = str(meta.get("method") or "lego")
        methods = groups.setdefault(meta["name"], {})
        if method in methods:
            raise UserError(f"{folder}: concept {meta['name']!r} already has a {method!r} folder "
                            f"({methods[method]}); pass one folder per method")
        methods[method] = folder
    entries = {name: ConceptEntry(name=name, methods=methods) for name, methods in groups.items()}
    return EvalConfig(concepts=list(entries.values()), **kwargs)
