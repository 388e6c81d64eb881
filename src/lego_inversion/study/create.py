"""`lego study create`: build a pairwise preference study from `lego generate` image sets (Lego §5.3).

    from lego_inversion.study.create import CreateConfig, create_study
    create_study(CreateConfig(out="studies/melted", sets=["lego=gen/lego", "ldm=gen/ldm"],
                              concepts=["runs/melted"], raters_per_pair=10, attention_checks=4))

Each image set is a `lego generate --out` folder: PNGs plus `images.jsonl`, read as `manifest.ImageRecord`s.
A record's method, subject and concepts come from the record itself; what it lacks comes from `--set METHOD=DIR`
(method), `--mapping` or `--subject` (subject), and, for a record with no concepts (a plain-prompt baseline made
without `lego generate --about`), from the study's one concept when exactly one concept has references (one
`--concept` or one `--references`). Images of the first method (the one under test, "a") are paired with each
other method's images ("b") of the same concept, target subject and seed. Reference images come from a
`lego invert` output (concept.json), a concept source folder (with/ without/) or a plain folder
(--references NAME=DIR). Left/right order is drawn per rater and pair; every rater also sees every attention
check (a reference image vs. an unrelated image). The folder is built beside `--out` and swapped in whole.
"""

from __future__ import annotations

import hashlib
import io
import random
import secrets as secrets_mod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_dir, atomic_write_json, atomic_write_text
from ..documents import read_document
from ..errors import UserError
from ..manifest import MANIFEST, ImageRecord, read_manifest
from .model import DEFAULT_QUESTION, FORMAT, load_study

MAX_SIDE = 1024  # candidate/reference images are stored at most this large (pages stay light)


@dataclass
class CreateConfig:
    out: str
    sets: list[str]  # "METHOD=DIR" or "DIR"
    concepts: list[str] = field(default_factory=list)  # lego invert outputs or concept source folders
    references: list[str] = field(default_factory=list)  # "NAME=DIR" plain folders of reference images
    subject: str | None = None  # default target subject for records without one
    mapping: str | None = None  # JSON: {file | set/file | prompt: subject or {"subject", "method"}}
    target: str | None = None  # method under test; default: the first set's method
    raters_per_pair: int = 10
    raters: int | None = None  # default: raters_per_pair (every rater sees every pair)
    attention_checks: int = 0  # per concept
    max_references: int = 4
    question: str = DEFAULT_QUESTION
    name: str | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.sets:
            raise UserError("--set: give the image sets to compare, e.g. --set lego=gen/lego --set ldm=gen/ldm")
        if self.raters_per_pair < 1:
            raise UserError(f"--raters-per-pair must be >= 1, got {self.raters_per_pair}")
        if self.raters is None:
            self.raters = self.raters_per_pair
        if self.raters < self.raters_per_pair:
            raise UserError(f"--raters ({self.raters}) must be >= --raters-per-pair ({self.raters_per_pair})")
        if self.raters > 100000 or self.attention_checks < 0 or self.max_references < 1:
            raise UserError("--raters must be <= 100000, --attention-checks >= 0 and --max-references >= 1")
        if not self.question.strip():
            raise UserError("--question must not be empty")


def _split(arg: str, flag: str, need_name: bool) -> tuple[str | None, Path]:
    if "=" in arg:
        name, path = arg.split("=", 1)
        if not name.strip():
            raise UserError(f"{flag} {arg!r}: empty name before '='; use NAME=DIR")
        return name.strip(), Path(path)
    if need_name:
        raise UserError(f"{flag} {arg!r}: use NAME=DIR")
    return None, Path(arg)


def _mapping(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    return read_document(path, missing="pass an existing --mapping file",
                         fix="--mapping must be a JSON object {file or prompt: subject}")


@dataclass(frozen=True)
class StudyImage:
    """One usable image: its facts (`record`, with method, subject and concepts filled in) and its image set."""

    record: ImageRecord
    image_set: Path  # the --set folder it came from

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What pairs images across methods: (method, concept, subject, seed)."""
        r = self.record
        return (str(r.method), r.concept, str(r.subject), int(r.seed or 0))


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _mapped(mapping: dict[str, Any], folder: Path, rec: ImageRecord) -> dict[str, Any]:
    """The --mapping entry for a record: keyed by "set/file", "file", expanded prompt or prompt."""
    keys = (f"{folder.name}/{rec.path.name}", rec.path.name, rec.expanded_prompt, rec.prompt)
    hit = next((mapping[k] for k in keys if isinstance(k, str) and k in mapping), None)
    return {"subject": hit} if isinstance(hit, str) else (hit if isinstance(hit, dict) else {})


def _problem(rec: ImageRecord, folder: Path) -> str | None:
    """Why a resolved record cannot be used, or None."""
    if not rec.method:
        return f"no method; use --set METHOD={folder}"
    if not rec.subject:
        return "no subject; use --subject or --mapping (or `lego generate --subject`)"
    if not rec.concepts:
        return ("no concepts; make the set with `lego generate --about NAME`, or give exactly one --concept so "
                "that records without concepts are about it")
    if rec.seed is None:
        return "no \"seed\"; pairs are matched by seed"
    if not rec.path.is_file():
        return f"image {rec.path.name!r} not found inside {folder}"
    return None


def read_image_sets(cfg: CreateConfig, problems: list[str], default_concept: str | None = None) -> list[StudyImage]:
    """All records of all sets with method/subject/concepts filled in; unusable records go to `problems`.
    `default_concept` is the concept of records that name none (None: such records are unusable)."""
    mapping = _mapping(cfg.mapping)
    images = []
    for arg in cfg.sets:
        method_override, folder = _split(arg, "--set", need_name=False)
        for rec in read_manifest(folder / MANIFEST):
            hit = _mapped(mapping, folder, rec)
            rec = replace(rec, method=_text(method_override) or _text(rec.method) or _text(hit.get("method")),
                          subject=_text(rec.subject) or _text(hit.get("subject")) or _text(cfg.subject),
                          concepts=rec.concepts or ((default_concept,) if default_concept else ()))
            problem = _problem(rec, folder)
            if problem:
                problems.append(f"{folder / MANIFEST} ({rec.path.name}): {problem}")
            else:
                images.append(StudyImage(rec, folder))
    return images


def _images_in(folder: Path) -> list[Path]:
    from ..images import list_images

    return list_images(folder) if folder.is_dir() else []


def load_references(cfg: CreateConfig) -> dict[str, dict[str, list[Path]]]:
    """concept name -> {"with": [...], "without": [...]} from --concept folders and --references NAME=DIR."""
    refs: dict[str, dict[str, list[Path]]] = {}
    for arg in cfg.concepts:
        name, folder = _split(arg, "--concept", need_name=False)
        meta_path = folder / "concept.json"
        if meta_path.is_file():
            try:
                meta = read_document(meta_path, fix="re-run `lego invert`")
                listed = meta["reference_images"]
                roots = [folder] + ([Path(meta["root"])] if isinstance(meta.get("root"), str) else [])
                found = {}
                for kind in ("with", "without"):
                    found[kind] = []
                    for rel in listed.get(kind, []):
                        cands = [Path(rel)] if Path(rel).is_absolute() else [r / rel for r in roots]
                        hit = next((c for c in cands if c.is_file()), None)
                        if hit is None:
                            raise UserError(f"{meta_path}: reference image {rel!r} not found (looked in "
                                            f"{', '.join(map(str, roots))}); use --references NAME=DIR instead")
                        found[kind].append(hit)
                name = name or str(meta["name"])
            except (OSError, KeyError, TypeError, AttributeError) as exc:
                raise UserError(f"{meta_path}: unreadable or missing name/reference_images ({exc!r})") from None
        elif (folder / "with").is_dir():
            found = {"with": _images_in(folder / "with"), "without": _images_in(folder / "without")}
            name = name or folder.name
        else:
            raise UserError(f"--concept {folder}: neither a `lego invert` output (concept.json) nor a concept "
                            "folder with with/; for a plain folder of images use --references NAME=DIR")
        refs[name] = found
    for arg in cfg.references:
        name, folder = _split(arg, "--references", need_name=True)
        images = _images_in(folder)
        if not images:
            raise UserError(f"--references {arg}: {folder} has no images")
        refs[name] = {"with": images, "without": []}
    for name, found in refs.items():
        if not found["with"]:
            raise UserError(f"concept {name!r}: no reference images found; add them to with/ or use --references")
    return refs


class _ImageStore:
    """Copies images into images/ as PNG under content-hash names (method-blind URLs, deduplicated)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cache: dict[Path, str] = {}

    def add(self, path: Path | None, image=None) -> str:
        from ..images import load_image

        if path is not None and path in self.cache:
            return self.cache[path]
        img = image if image is not None else load_image(path)
        img.thumbnail((MAX_SIDE, MAX_SIDE))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
        name = hashlib.sha256(data).hexdigest()[:20] + ".png"
        if not (self.folder / name).exists():
            (self.folder / name).write_bytes(data)
        if path is not None:
            self.cache[path] = name
        return name


def _cand(store: _ImageStore, rec: ImageRecord) -> dict:
    return {"method": rec.method, "image": store.add(rec.path), "source": str(rec.path), "prompt": rec.prompt}


def _index(images: list[StudyImage], problems: list[str]) -> dict[tuple, StudyImage]:
    """(method, concept, subject, seed) -> image; a second image with the same key is reported and ignored."""
    index: dict[tuple, StudyImage] = {}
    for im in images:
        if im.key in index:
            method, concept, subject, seed = im.key
            problems.append(f"{im.record.path}: duplicate {method}/{concept}/{subject}/seed {seed} "
                            f"(already have {index[im.key].record.path}); ignored")
        else:
            index[im.key] = im
    return index


def _pair_items(index: dict[tuple, StudyImage], methods: list[str], refs: dict, store: _ImageStore,
                problems: list[str]) -> list[dict]:
    """One pair per target image and other method with the same concept, subject and seed."""
    target, items, matched = methods[0], [], set()
    for key, im in sorted(index.items(), key=lambda kv: str(kv[0])):
        method, concept, subject, seed = key
        if method != target:
            continue
        missing = [c for c in im.record.concepts if c not in refs]
        if missing:
            problems.append(f"{im.record.path}: no reference images for concept(s) {missing}; use --concept")
            continue
        for other in methods[1:]:
            partner = index.get((other, concept, subject, seed))
            if partner is None:
                continue
            matched.update({key, partner.key})
            items.append({"id": f"p{len(items) + 1:05d}", "kind": "pair", "concept": concept, "subject": subject,
                          "seed": seed, "a": _cand(store, im.record), "b": _cand(store, partner.record)})
    for key, im in index.items():
        if key not in matched:
            problems.append(f"{im.record.path}: no partner with the same concept/subject/seed ({key[1]}, "
                            f"{key[2]}, {key[3]}) in the other set(s); not used")
    return items


def _methods(cfg: CreateConfig, images: list[StudyImage], problems: list[str]) -> list[str]:
    """The methods found, the one under test first."""
    methods = list(dict.fromkeys(im.record.method for im in images))
    target = cfg.target or (methods[0] if methods else None)
    if target not in methods or len(methods) < 2:
        raise UserError(f"need images of at least two methods incl. the target {target!r}; found {methods} "
                        f"({len(problems)} records unusable{': ' + problems[0] if problems else ''})")
    return [target] + [m for m in methods if m != target]


def create_study(cfg: CreateConfig) -> dict:
    """Build the study folder (atomically: built in a temporary sibling and swapped in). Returns a summary."""
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is not empty" if out.is_dir() else "is a file"
        raise UserError(f"--out {out}: already exists and {what}; choose a new folder")
    refs = load_references(cfg)
    problems: list[str] = []
    images = read_image_sets(cfg, problems, default_concept=next(iter(refs)) if len(refs) == 1 else None)
    methods = _methods(cfg, images, problems)
    index = _index(images, problems)
    rng = random.Random(cfg.seed)
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        store = _ImageStore(tmp / "images")
        pairs = _pair_items(index, methods, refs, store, problems)
        if not pairs:
            raise UserError(f"no pairs matched across {methods} ({len(problems)} problems; first: "
                            f"{problems[0] if problems else '-'})")
        checks = _attention_checks(cfg, store, refs, images, sorted({p["concept"] for p in pairs}), rng)
        order = _assign(cfg, pairs, checks, rng)
        n_refs = {c: [store.add(p) for p in f["with"][: cfg.max_references]] for c, f in refs.items()}
        name = cfg.name or out.name
        study = {"format": FORMAT, "id": f"{name}-{secrets_mod.token_hex(6)}", "name": name,
                 "question": cfg.question.strip(), "seed": cfg.seed, "raters_per_pair": cfg.raters_per_pair,
                 "methods": methods, "references": n_refs, "items": pairs + checks, "order": order}
        secrets = {"admin_token": secrets_mod.token_urlsafe(24),
                   "raters": {r: secrets_mod.token_urlsafe(18) for r in order}}
        atomic_write_json(tmp / "study.json", study)
        atomic_write_json(tmp / "secrets.json", secrets)
        (tmp / "secrets.json").chmod(0o600)
        atomic_write_text(tmp / "problems.txt", "".join(p + "\n" for p in problems))
        load_study(tmp)  # what we wrote must load
    return {"out": str(out), "pairs": len(pairs), "checks": len(checks), "raters": len(order),
            "methods": methods, "problems": problems}


def _attention_checks(cfg, store, refs, images: list[StudyImage], concepts, rng) -> list[dict]:
    """Per concept: one of its reference images (right answer) vs. an image of another concept, a "without"
    reference, or a plain grey image. Which slot holds the right answer is drawn at random."""
    from PIL import Image

    checks = []
    for concept in concepts:
        parts = concept.split("+")
        for _ in range(cfg.attention_checks):
            good = rng.choice(refs[parts[0]]["with"])
            others = [im.record.path for im in images if not set(parts) & set(im.record.concepts)]
            without = refs[parts[0]]["without"]
            bad_path = rng.choice(others) if others else (rng.choice(without) if without else None)
            bad = store.add(bad_path) if bad_path else store.add(None, Image.new("RGB", (512, 512), (128, 128, 128)))
            cands = [{"method": "reference", "image": store.add(good), "source": str(good)},
                     {"method": "distractor", "image": bad, "source": str(bad_path or "grey")}]
            answer = rng.choice("ab")
            if answer == "b":
                cands.reverse()
            checks.append({"id": f"c{len(checks) + 1:05d}", "kind": "check", "concept": concept, "subject": "",
                           "seed": None, "a": cands[0], "b": cands[1], "answer": answer})
    return checks


def _assign(cfg: CreateConfig, pairs: list[dict], checks: list[dict], rng: random.Random) -> dict:
    """k raters per pair, balanced: pair j (in a shuffled order) goes to raters (j*k + i) mod R, i < k.
    Every rater also gets every attention check; each rater's items are shuffled and each item's left/right
    order is drawn per rater."""
    raters = [f"r{i + 1:03d}" for i in range(cfg.raters)]
    assigned: dict[str, list[str]] = {r: [] for r in raters}
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    for j, pair in enumerate(shuffled):
        for i in range(cfg.raters_per_pair):
            assigned[raters[(j * cfg.raters_per_pair + i) % cfg.raters]].append(pair["id"])
    order = {}
    for r in raters:
        ids = assigned[r] + [c["id"] for c in checks]
        rng.shuffle(ids)
        order[r] = [[i, rng.random() < 0.5] for i in ids]
    return order
