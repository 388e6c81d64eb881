"""The generation plan and the image records every metric scores (§5.3 of Lego: N images per concept/method).

    concepts = resolve_concepts(cfg)                       # concept.json metadata merged into the config
    records = plan_records(cfg, concepts, out_dir)         # generation mode: one record per image to make
    records = folder_records(cfg, concepts)                # scoring mode: existing folders
    check_same_seeds(records)                              # every method must see the same noise

Generated images live at `OUT/images/<concept>/<method>/<target-slug>_s<seed>.png`; image i of every method
uses seed `cfg.seed + i`, so Lego, its ablations, Textual Inversion and the text prompt ("LDM" in Table 2)
start from the same noise. Existing folders are read from `images.jsonl` (the `lego generate` layout) or,
for plain folders, from file names: the seed is the last run of digits in the name (`bear_s42.png` -> 42).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..manifest import read_manifest, write_manifest
from .config import TEXT_METHOD, ConceptEntry, EvalConfig, read_concept_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_DIGITS = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class ImageRecord:
    """One image to generate or score."""

    concept: str
    method: str
    target: str
    seed: int
    path: Path
    prompt: str = ""


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

    @property
    def name(self) -> str:
        return self.entry.name

    def fill(self, template: str, target: str, concept_text: str) -> str:
        return template.replace("{target}", target).replace("{concept}", concept_text)

    def text_prompt(self, target: str) -> str:
        """The natural-language prompt (the paper's "LDM" column): description instead of learned tokens."""
        return self.fill(self.entry.prompt_template, target, self.description or self.name)

    def questions_for(self, target: str) -> list[str]:
        return [q.replace("{target}", target) for q in self.questions]


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "x"


def resolve_concepts(cfg: EvalConfig) -> list[ResolvedConcept]:
    """Merge each concept's config entry with the concept.json of its learned folders (config wins)."""
    out = []
    for entry in cfg.concepts:
        metas = {m: read_concept_json(p) for m, p in entry.methods.items()}
        for m, p in entry.methods.items():
            if not (p / "learned_embeds.safetensors").is_file():
                raise UserError(f"{p}: no learned_embeds.safetensors; finish `lego invert` for concept "
                                f"{entry.name!r} ({m}) first")
        first = next(iter(metas.values()), {})
        ev = first.get("evaluation") or {}
        description = entry.description or first.get("description")
        questions = list(entry.questions) or [q for q in (ev.get("questions") or []) if isinstance(q, str)]
        count = entry.count if entry.count is not None else ev.get("count")
        exemplars = list(entry.exemplars)
        if not exemplars:
            refs = (metas.get("lego") or first).get("reference_images") or {}
            exemplars = [Path(p) for p in (refs.get("without") or refs.get("with") or [])]
        if entry.methods:
            methods = list(entry.methods) + [TEXT_METHOD]
        else:
            methods = list(entry.folders)
        if cfg.methods is not None:
            methods = [m for m in cfg.methods if m in methods]
        if not methods:
            raise UserError(f"concept {entry.name!r}: none of the requested methods {cfg.methods} is available; "
                            f"it has {sorted(set(entry.methods) | set(entry.folders) | {TEXT_METHOD})}")
        if entry.methods and TEXT_METHOD in methods and not description:
            raise UserError(f"concept {entry.name!r}: no `description` for the text baseline; add one to the "
                            "[[concepts]] entry or the concept TOML")
        if "vqa" in cfg.metrics and not questions and count is None:
            raise UserError(f"concept {entry.name!r} has no question templates: add `questions = [\"Is the "
                            "{target} ...?\"]` to its [evaluation] table (concept TOML) or its [[concepts]] entry")
        if "count" in cfg.metrics and count is not None and count < 0:
            raise UserError(f"concept {entry.name!r}: count must be >= 0")
        for p in exemplars:
            if not Path(p).is_file():
                raise UserError(f"concept {entry.name!r}: exemplar image {p} does not exist; fix `exemplars`")
        targets = list(entry.targets or cfg.targets or [t for t in (ev.get("targets") or []) if isinstance(t, str)])
        if entry.methods and not targets:
            raise UserError(f"concept {entry.name!r}: no target subjects to generate; pass --target 'toy bear', "
                            "set `targets = [...]` in the evaluation config or in the concept TOML's [evaluation]")
        out.append(ResolvedConcept(entry=entry, methods=methods, targets=targets,
                                   description=description, questions=questions,
                                   count=count if isinstance(count, int) else None,
                                   exemplars=[Path(p) for p in exemplars], metas=metas))
    return out


def plan_records(cfg: EvalConfig, concepts: list[ResolvedConcept], out_dir: Path) -> list[ImageRecord]:
    """Generation mode: concept x target x method x N images with seeds cfg.seed + i."""
    records = []
    for rc in concepts:
        if not rc.entry.methods:
            continue
        slugs = {}
        for t in rc.targets:
            if slug(t) in slugs:
                raise UserError(f"concept {rc.name!r}: targets {slugs[slug(t)]!r} and {t!r} share a file name; "
                                "make them differ in letters or digits")
            slugs[slug(t)] = t
        for method in rc.methods:
            folder = out_dir / "images" / rc.name / method
            for target in rc.targets:
                concept_text = rc.description if method == TEXT_METHOD else "{" + rc.metas[method]["name"] + "}"
                prompt = rc.fill(rc.entry.prompt_template, target, concept_text or rc.name)
                for i in range(cfg.num_images):
                    seed = cfg.seed + i
                    records.append(ImageRecord(rc.name, method, target, seed,
                                               folder / f"{slug(target)}_s{seed}.png", prompt))
    return records


def write_manifests(records: list[ImageRecord], out_dir: Path) -> None:
    """Write `images.jsonl` (the `lego generate` layout) beside each generated folder, atomically."""
    groups: dict[Path, list[ImageRecord]] = defaultdict(list)
    for r in records:
        if r.path.exists():
            groups[r.path.parent].append(r)
    for folder, rs in groups.items():
        write_manifest(folder, [{"file": r.path.name, "prompt": r.prompt, "expanded_prompt": None, "seed": r.seed,
                                 "concepts": [r.concept] if r.method != TEXT_METHOD else [],
                                 "subject": r.target, "method": r.method} for r in rs])


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
            manifest = folder / "images.jsonl"
            seen = set()
            if manifest.is_file():
                for n, row in enumerate(read_manifest(manifest), 1):
                    target = row.get("subject") or spec.target
                    if not isinstance(row.get("file"), str) or not isinstance(row.get("seed"), int) or not target:
                        raise UserError(f"{manifest}: line {n} needs `file`, integer `seed` and `subject` "
                                        "(or set `target` for this folder in the evaluation config)")
                    records.append(ImageRecord(rc.name, method, str(target), row["seed"], folder / row["file"],
                                               str(row.get("prompt") or "")))
            else:
                if not spec.target:
                    raise UserError(f"{folder}: plain image folder without images.jsonl; set `folders.{method} = "
                                    f"{{path = ..., target = \"toy bear\"}}` for concept {rc.name!r}")
                for p in sorted(folder.iterdir()):
                    if p.suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    m = _DIGITS.search(p.stem)
                    if not m:
                        raise UserError(f"{p}: no seed in the file name; name images like `bear_s42.png` "
                                        "or add an images.jsonl")
                    records.append(ImageRecord(rc.name, method, spec.target, int(m.group(1)), p))
            mine = [r for r in records if r.concept == rc.name and r.method == method]
            if not mine:
                raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found for concept "
                                f"{rc.name!r} ({method}); point `folders.{method}` at a folder with images")
            for r in mine:
                if (r.target, r.seed) in seen:
                    raise UserError(f"{folder}: seed {r.seed} appears twice for target {r.target!r}; "
                                    "each image needs its own seed")
                seen.add((r.target, r.seed))
                if not r.path.is_file():
                    raise UserError(f"{folder}/images.jsonl lists {r.path.name}, which does not exist")
    return records


def check_same_seeds(records: list[ImageRecord]) -> None:
    """Every method of a concept must have the same (target, seed) pairs: the same noise for every method."""
    sets: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        sets[r.concept][r.method].add((r.target, r.seed))
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
