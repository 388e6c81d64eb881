"""The study folder written by `lego study create` and read by `serve` and `results`.

    from lego_inversion.study.model import load_study
    study = load_study("studies/melted")          # validates study.json + secrets.json, raises UserError
    study.items["p0001"], study.rater_order("r01"), study.rater_for_token(token)

Layout (everything a rater can see lives in images/, under content-hash names that do not reveal the method):
    study.json     design: methods, concepts + reference images, pairs, attention checks, per-rater order
    secrets.json   admin token and one token per rater (file mode 0600; hand each rater their link)
    images/        copies of every candidate and reference image (PNG)
    answers.sqlite default storage, created by `lego study serve` (SQLite in WAL mode)

Design follows Lego §5.3: each pair holds one image of the method under test ("a", e.g. Lego) and one of a
baseline ("b"), matched by concept, target subject and seed; k raters answer each pair (10 in the paper).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..documents import read_document

FORMAT = "lego-study/1"
DEFAULT_QUESTION = "Which image best represents the concept shown in the reference images?"
ITEM_ID_RE = re.compile(r"^[pc][0-9]{4,6}$")
RATER_ID_RE = re.compile(r"^r[0-9]{3,6}$")
IMAGE_NAME_RE = re.compile(r"^[0-9a-f]{20}\.png$")


@dataclass(frozen=True)
class Candidate:
    method: str
    image: str  # file name inside images/
    source: str = ""  # where it came from (for the researcher, never shown to raters)
    prompt: str = ""


@dataclass(frozen=True)
class Item:
    """A pair (kind "pair") or an attention check (kind "check", whose right answer is `answer`)."""

    id: str
    kind: str
    concept: str
    subject: str
    seed: int | None
    a: Candidate
    b: Candidate
    answer: str | None = None  # "a" or "b" for checks

    @property
    def comparison(self) -> str:
        return f"{self.a.method} vs {self.b.method}"


@dataclass
class Study:
    root: Path
    id: str  # unique per `lego study create` run: the key of this study's answers in a shared database
    name: str
    question: str
    seed: int
    raters_per_pair: int
    methods: list[str]
    references: dict[str, list[str]]  # concept -> image names
    items: dict[str, Item]
    order: dict[str, list[tuple[str, bool]]]  # rater -> [(item id, swapped: b shown on the left)]
    admin_token: str = field(repr=False, default="")
    rater_tokens: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def pairs(self) -> list[Item]:
        return [it for it in self.items.values() if it.kind == "pair"]

    @property
    def checks(self) -> list[Item]:
        return [it for it in self.items.values() if it.kind == "check"]

    def rater_for_token(self, token: str) -> str | None:
        """Constant-time lookup of the rater a token belongs to (None if no rater has it)."""
        found = None
        for rater, expected in self.rater_tokens.items():
            if hmac.compare_digest(expected.encode(), token.encode()):
                found = rater
        return found

    def is_admin(self, token: str | None) -> bool:
        return bool(token) and bool(self.admin_token) and hmac.compare_digest(
            self.admin_token.encode(), str(token).encode())

    def references_for(self, concept: str) -> list[str]:
        refs: list[str] = []
        for part in concept.split("+"):
            refs += [r for r in self.references.get(part, []) if r not in refs]
        return refs

    def choice_to_slot(self, rater: str, item_id: str, side: str) -> str:
        """Map the side a rater clicked ("left"/"right") to the candidate slot ("a"/"b") they saw there."""
        swapped = dict(self.order[rater])[item_id]
        left_is_a = not swapped
        return "a" if (side == "left") == left_is_a else "b"


def _get(obj: dict, key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise UserError(f"{where}: missing field {key!r}; re-create the study with `lego study create`")
    value = obj[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise UserError(f"{where}: field {key!r} must be a {kind.__name__}; re-create the study")
    return value


def _candidate(obj: Any, where: str) -> Candidate:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: must be an object; re-create the study")
    image = _get(obj, "image", str, where)
    if not IMAGE_NAME_RE.match(image):
        raise UserError(f"{where}: image {image!r} is not a study image name; re-create the study")
    return Candidate(_get(obj, "method", str, where), image, str(obj.get("source", "")), str(obj.get("prompt", "")))


def parse_study(root: Path, data: dict, secrets: dict | None) -> Study:
    where = str(root / "study.json")
    if data.get("format") != FORMAT:
        raise UserError(f"{where}: not a {FORMAT} file (format={data.get('format')!r}); "
                        "point at a folder made by `lego study create`")
    items: dict[str, Item] = {}
    for i, raw in enumerate(_get(data, "items", list, where)):
        w = f"{where}: items[{i}]"
        if not isinstance(raw, dict):
            raise UserError(f"{w}: must be an object; re-create the study")
        item_id = _get(raw, "id", str, w)
        kind = _get(raw, "kind", str, w)
        if not ITEM_ID_RE.match(item_id) or item_id in items or kind not in ("pair", "check"):
            raise UserError(f"{w}: bad or duplicate id/kind ({item_id!r}, {kind!r}); re-create the study")
        answer = raw.get("answer")
        if kind == "check" and answer not in ("a", "b"):
            raise UserError(f"{w}: attention check needs answer 'a' or 'b'; re-create the study")
        seed = raw.get("seed")
        items[item_id] = Item(item_id, kind, _get(raw, "concept", str, w), str(raw.get("subject", "")),
                              seed if isinstance(seed, int) else None,
                              _candidate(raw.get("a"), f"{w}.a"), _candidate(raw.get("b"), f"{w}.b"),
                              answer if kind == "check" else None)
    order: dict[str, list[tuple[str, bool]]] = {}
    for rater, entries in _get(data, "order", dict, where).items():
        if not RATER_ID_RE.match(rater) or not isinstance(entries, list):
            raise UserError(f"{where}: order[{rater!r}] is malformed; re-create the study")
        seen = set()
        for e in entries:
            if not (isinstance(e, list) and len(e) == 2 and e[0] in items and isinstance(e[1], bool)) or e[0] in seen:
                raise UserError(f"{where}: order[{rater!r}] has a bad entry {e!r}; re-create the study")
            seen.add(e[0])
        order[rater] = [(e[0], e[1]) for e in entries]
    refs = _get(data, "references", dict, where)
    for concept, names in refs.items():
        if not isinstance(names, list) or not all(isinstance(n, str) and IMAGE_NAME_RE.match(n) for n in names):
            raise UserError(f"{where}: references[{concept!r}] must list study image names; re-create the study")
    k = _get(data, "raters_per_pair", int, where)
    study = Study(root, _get(data, "id", str, where), _get(data, "name", str, where),
                  _get(data, "question", str, where),
                  _get(data, "seed", int, where), k, _get(data, "methods", list, where), refs, items, order)
    if secrets is not None:
        ws = str(root / "secrets.json")
        study.admin_token = _get(secrets, "admin_token", str, ws)
        tokens = _get(secrets, "raters", dict, ws)
        if set(tokens) != set(order) or not all(isinstance(t, str) and len(t) >= 16 for t in tokens.values()):
            raise UserError(f"{ws}: rater tokens do not match the raters in study.json; re-create the study")
        study.rater_tokens = dict(tokens)
    return study


def _read_json(path: Path) -> dict:
    return read_document(path, missing="point at a folder made by `lego study create`", fix="re-create the study")


def load_study(root: str | Path, with_secrets: bool = True) -> Study:
    """Load and validate a study folder (secrets.json is needed by `serve`, not by `results`)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such study folder; create one with `lego study create --out {root} ...`")
    secrets = _read_json(root / "secrets.json") if with_secrets else None
    return parse_study(root.resolve(), _read_json(root / "study.json"), secrets)
