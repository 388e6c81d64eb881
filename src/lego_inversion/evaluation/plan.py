"""The generation plan and the image records every metric scores (§5.3 of Lego: N images per concept/method).

    concepts = resolve_concepts(cfg)                       # concept.json metadata merged into the config
    cfg = dataclasses.replace(cfg, metrics=chosen_metrics(cfg, concepts))   # "auto" metrics made explicit
    records = plan_records(cfg, concepts, out_dir)         # generation mode: one record per image to make
    records = folder_records(cfg, concepts)                # scoring mode: existing folders
    check_same_seeds(records)                              # every method must see the same noise

Records are `lego_inversion.manifest.ImageRecord`s: `subject` is the target subject, `concepts` the one
evaluation concept the image is about (also for the text baseline, which stands in for it), `method` the
config's method name. Generated images live at `OUT/images/<concept>/<method>/<target-slug>_s<seed>.png`;
image i of every method uses seed `cfg.seed + i`, so Lego, its ablations, Textual Inversion and the text
prompt ("LDM" in Table 2) start from the same noise. Existing folders are read from `images.jsonl` (the
`lego generate` layout) or, for plain folders, from file names: the seed is the last run of digits in the
name (`bear_s42.png` -> 42).
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..backbones import resolve_model
from ..errors import UserError
from ..manifest import MANIFEST, ImageRecord, read_manifest, write_manifest
from ..prompts import check_template, fill
from . import oracle
from .config import (DEFAULT_COUNT_PROMPT, DEFAULT_PROMPT, EXCITE_METHOD, STANDARD_METRICS, TEXT_METHOD, ConceptEntry,
                     EvalConfig, read_concept_json)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PLAIN_METHODS = (TEXT_METHOD, EXCITE_METHOD)  # methods that prompt with the description, no learned folder
# words never excited by the attend-excite method: they name no object or attribute
_FUNCTION_WORDS = frozenset("a an the of in on at with that is are was and or to by for as into from it its their "
                            "them being made".split())
_DIGITS = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class ResolvedConcept:
    """A config concept with the fields filled in from its learned folders' concept.json."""

    entry: ConceptEntry
    methods: list[str]
    targets: list[str]
    description: str | None
    questions: list[str]
    count: int | None
    exemplars: list[Path]
    metas: dict[str, dict] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # method -> backbone (generation mode only)
    truth: dict | None = None  # toy-world ground truth (concept.json `toyworld`), see evaluation.oracle

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def template(self) -> str:
        """The prompt template: the entry's `prompt`, else the default for a cardinality concept or for others.

        "Cardinality" is decided by the resolved count (config entry, else concept.json), not the entry alone."""
        if self.entry.prompt:
            return self.entry.prompt
        return DEFAULT_COUNT_PROMPT if self.count is not None else DEFAULT_PROMPT

    def prompt(self, target: str, method: str) -> str:
        """The prompt of `method` for `target`: `{concept}` is the learned concept (`{name}`, which the generator
        expands into its tokens) or, for the text baseline ("LDM" in Table 2), the description in words."""
        words = self.description or self.name
        concept = words if method in PLAIN_METHODS else "{" + self.metas[method]["name"] + "}"
        return fill(self.template, {"target": target, "concept": concept}, where=f"concept {self.name!r}: prompt")

    def excite_words(self, target: str) -> list[str]:
        """The words the attend-excite method excites in the text prompt: every word of the target subject and
        of the concept's description except function words (a, of, in, that...): the objects and attributes the
        prompt must not neglect (Chefer et al. 2023 excite subject tokens; Lego's concepts are attributes)."""
        out: list[str] = []
        for text in (target, self.description or self.name):
            words = [w.strip(".,;:!?\"'()") for w in text.split()]
            content = [w for w in words if w and w.lower() not in _FUNCTION_WORDS] or [w for w in words if w]
            out += [w for w in content if w not in out]
        return out

    def text_prompt(self, target: str) -> str:
        """The concept applied to `target` in words (the text baseline's prompt; CLIP's concept text)."""
        return self.prompt(target, TEXT_METHOD)

    def question(self, template: str, target: str) -> str:
        return fill(template, {"target": target}, where=f"concept {self.name!r}: questions")

    def questions_for(self, target: str) -> list[str]:
        return [self.question(q, target) for q in self.questions]

    @property
    def oracle_ready(self) -> bool:
        """Generated by toy-world models only and with a toy-world ground truth: the oracle can judge it."""
        return (self.truth is not None and bool(self.models)
                and all(oracle.is_toy_world_model(self.models[m]) for m in self.methods))


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "x"


def _models(cfg: EvalConfig, metas: dict[str, dict], methods: list[str], main: dict) -> dict[str, str]:
    """Each method's backbone: `generation.model`, else its folder's `base_model` (the text baseline: that of
    the `main` folder), resolved by `backbones.resolve_model` (the toy-model aliases live there)."""
    if not metas:
        return {}
    out = {}
    for m in methods:
        base = cfg.generation.model or (metas.get(m) or main).get("base_model")
        out[m] = resolve_model(base if isinstance(base, str) else None)
    return out


def _resolve(cfg: EvalConfig, entry: ConceptEntry) -> ResolvedConcept:
    metas = {m: read_concept_json(p) for m, p in entry.methods.items()}
    for m, p in entry.methods.items():
        if not (p / "learned_embeds.safetensors").is_file():
            raise UserError(f"{p}: no learned_embeds.safetensors; finish `lego invert` for concept "
                            f"{entry.name!r} ({m}) first")
    # description, questions, count, exemplars and ground truth: the lego folder's, else the first folder's
    main_method = "lego" if "lego" in metas else next(iter(metas), None)
    main = metas.get(main_method, {})
    where = f"{entry.methods[main_method] / 'concept.json'}" if main_method else f"concept {entry.name!r}"
    ev = main.get("evaluation") or {}
    description = entry.description or main.get("description")
    questions = list(entry.questions) or [q for q in (ev.get("questions") or []) if isinstance(q, str)]
    if not entry.questions:  # the config's own questions were checked when it was read
        for q in questions:
            check_template(q, {"target"}, where=f"{where}: evaluation.questions")
    count = entry.count if entry.count is not None else ev.get("count")
    exemplars = list(entry.exemplars)
    if not exemplars:
        refs = main.get("reference_images") or {}
        exemplars = [Path(p) for p in (refs.get("without") or refs.get("with") or [])]
    # the text baseline always; attend-excite (costlier: extra UNet passes with gradients) only when asked for
    methods = list(entry.methods) + list(PLAIN_METHODS) if entry.methods else list(entry.folders)
    if cfg.methods is not None:
        methods = [m for m in cfg.methods if m in methods]
    elif entry.methods:
        methods.remove(EXCITE_METHOD)
    if not methods:
        plain = set(PLAIN_METHODS) if entry.methods else set()
        raise UserError(f"concept {entry.name!r}: none of the requested methods {cfg.methods} is available; "
                        f"it has {sorted(set(entry.methods) | set(entry.folders) | plain)}")
    if entry.methods and set(PLAIN_METHODS) & set(methods) and not description:
        raise UserError(f"concept {entry.name!r}: no `description` for the text baseline; add one to the "
                        "[[concepts]] entry or the concept TOML")
    for p in exemplars:
        if not Path(p).is_file():
            raise UserError(f"concept {entry.name!r}: exemplar image {p} does not exist; fix `exemplars`")
    targets = list(entry.targets or cfg.targets or [t for t in (ev.get("targets") or []) if isinstance(t, str)])
    if entry.methods and not targets:
        raise UserError(f"concept {entry.name!r}: no target subjects to generate; pass --target 'toy bear', "
                        "set `targets = [...]` in the evaluation config or in the concept TOML's [evaluation]")
    return ResolvedConcept(entry=entry, methods=methods, targets=targets, description=description,
                           questions=questions, count=count if isinstance(count, int) else None,
                           exemplars=[Path(p) for p in exemplars], metas=metas,
                           models=_models(cfg, metas, methods, main), truth=oracle.read_truth(main, where))


def chosen_metrics(cfg: EvalConfig, concepts: list[ResolvedConcept]) -> list[str]:
    """`cfg.metrics`, or when it is None ("auto"): `oracle` where the oracle can judge every concept (toy-world
    models, no downloads), the standard metrics where it cannot, both for a mix."""
    if cfg.metrics is not None:
        return list(cfg.metrics)
    ready = [rc.oracle_ready for rc in concepts]
    return (list(STANDARD_METRICS) if not all(ready) else []) + (["oracle"] if any(ready) else [])


def check_metrics(metrics: list[str], concepts: list[ResolvedConcept], asked: bool = True) -> None:
    """What each chosen metric needs from every concept; bad input fails here, before any generation.

    `oracle` judges the concepts it can (`oracle_ready`); when it was `asked` for by name, every concept must be
    one of them."""
    for rc in concepts:
        if "vqa" in metrics and not rc.questions and rc.count is None:
            raise UserError(f"concept {rc.name!r} has no question templates: add `questions = [\"Is the "
                            "{target} ...?\"]` to its [evaluation] table (concept TOML) or its [[concepts]] entry")
        if "oracle" not in metrics or not (asked or rc.oracle_ready):
            continue
        if rc.truth is None:
            raise UserError(f"metric oracle: concept {rc.name!r} has no `toyworld` table in its concept.json; add "
                            "[toyworld] (subject, appearance, concept, variant, count) to its concept TOML, re-run "
                            "`lego invert`, or leave `oracle` out of --metrics")
        other = [m for m in rc.methods if not oracle.is_toy_world_model(rc.models.get(m))]
        if other:
            raise UserError(f"metric oracle: concept {rc.name!r} ({other[0]}) uses model "
                            f"{rc.models.get(other[0], 'unknown (scoring mode)')!r}, not a toy-world model; the "
                            "oracle only reads toy-world images: leave `oracle` out of --metrics")
        for t in rc.targets:
            oracle.require_subject(t, where=f"metric oracle: concept {rc.name!r}")


def resolve_concepts(cfg: EvalConfig) -> list[ResolvedConcept]:
    """Merge each concept's config entry with the concept.json of its learned folders (config wins), and check
    it against the metrics that will run."""
    concepts = [_resolve(cfg, entry) for entry in cfg.concepts]
    check_metrics(chosen_metrics(cfg, concepts), concepts, asked=cfg.metrics is not None)
    return concepts


def plan_records(cfg: EvalConfig, concepts: list[ResolvedConcept], out_dir: Path) -> list[ImageRecord]:
    """Generation mode: concept x target x method x N images with seeds cfg.seed + i."""
    records = []
    for rc in concepts:
        if not rc.entry.methods:
            continue
        slugs: dict[str, str] = {}
        for t in rc.targets:
            if slug(t) in slugs:
                raise UserError(f"concept {rc.name!r}: targets {slugs[slug(t)]!r} and {t!r} share a file name; "
                                "make them differ in letters or digits")
            slugs[slug(t)] = t
        for method in rc.methods:
            folder = Path(out_dir) / "images" / rc.name / method
            for target in rc.targets:
                prompt = rc.prompt(target, method)
                extra = {"excite": rc.excite_words(target)} if method == EXCITE_METHOD else {}
                for seed in range(cfg.seed, cfg.seed + cfg.num_images):
                    records.append(ImageRecord(path=folder / f"{slug(target)}_s{seed}.png", prompt=prompt, seed=seed,
                                               subject=target, method=method, concepts=(rc.name,),
                                               model=rc.models[method], extra=dict(extra)))
    return records


def write_manifests(records: list[ImageRecord]) -> None:
    """Write `images.jsonl` (the `lego generate` layout) beside each generated folder, atomically."""
    groups: dict[Path, list[ImageRecord]] = defaultdict(list)
    for r in records:
        if r.path.exists():
            groups[r.path.parent].append(r)
    for folder, rs in groups.items():
        write_manifest(folder, rs)


def _manifest_records(rc: ResolvedConcept, method: str, folder: Path, target: str | None) -> list[ImageRecord]:
    manifest = folder / MANIFEST
    out = []
    for n, r in enumerate(read_manifest(manifest), 1):
        subject = r.subject or target
        if r.seed is None or not subject:
            raise UserError(f"{manifest}: line {n} needs an integer `seed` and a `subject` (or set `target` for "
                            "this folder in the evaluation config)")
        out.append(dataclasses.replace(r, subject=subject, method=method, concepts=(rc.name,)))
    return out


def _plain_records(rc: ResolvedConcept, method: str, folder: Path, target: str | None) -> list[ImageRecord]:
    if not target:
        raise UserError(f"{folder}: plain image folder without {MANIFEST}; set `folders.{method} = "
                        f"{{path = ..., target = \"toy bear\"}}` for concept {rc.name!r}")
    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        m = _DIGITS.search(p.stem)
        if not m:
            raise UserError(f"{p}: no seed in the file name; name images like `bear_s42.png` or add an {MANIFEST}")
        out.append(ImageRecord(path=p, seed=int(m.group(1)), subject=target, method=method, concepts=(rc.name,)))
    return out


def folder_records(cfg: EvalConfig, concepts: list[ResolvedConcept]) -> list[ImageRecord]:
    """Scoring mode: read each concept's method folders (images.jsonl, else file names)."""
    records = []
    for rc in concepts:
        for method in rc.methods:
            spec = rc.entry.folders.get(method)
            if spec is None:
                continue
            folder = spec.path
            if not folder.is_dir():
                raise UserError(f"concept {rc.name!r}: image folder {folder} ({method}) does not exist")
            read = _manifest_records if (folder / MANIFEST).is_file() else _plain_records
            mine = read(rc, method, folder, spec.target)
            if not mine:
                raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found for concept "
                                f"{rc.name!r} ({method}); point `folders.{method}` at a folder with images")
            seen = set()
            for r in mine:
                if (r.subject, r.seed) in seen:
                    raise UserError(f"{folder}: seed {r.seed} appears twice for target {r.subject!r}; "
                                    "each image needs its own seed")
                seen.add((r.subject, r.seed))
                if not r.path.is_file():
                    raise UserError(f"{folder}/{MANIFEST} lists {r.path.name}, which does not exist")
            records += mine
    return records


def check_same_seeds(records: list[ImageRecord]) -> None:
    """Every method of a concept must have the same (target, seed) pairs: the same noise for every method."""
    sets: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        sets[r.concept][r.method].add((r.subject, r.seed))
    for concept, by_method in sets.items():
        items = list(by_method.items())
        ref_method, ref = items[0]
        for method, s in items[1:]:
            if s != ref:
                diff = sorted(s ^ ref)[0]
                has, lacks = (method, ref_method) if diff in s else (ref_method, method)
                raise UserError(f"concept {concept!r}: mismatched seeds between methods: {has} has target "
                                f"{diff[0]!r} seed {diff[1]} but {lacks} does not; every method must use the "
                                "same seeds (regenerate or remove the extra images)")


def verify_images(records: list[ImageRecord]) -> None:
    """Open every image once so a corrupt file is one clear error before any scoring starts."""
    from PIL import Image

    for r in records:
        try:
            with Image.open(r.path) as im:
                im.verify()
        except FileNotFoundError:
            raise UserError(f"{r.path}: image not found ({r.concept}/{r.method}); regenerate it") from None
        except Exception as exc:  # PIL raises many types for bad data
            raise UserError(f"{r.path}: corrupt or unreadable image ({type(exc).__name__}); delete or "
                            "replace it (generation mode re-creates deleted images)") from None
