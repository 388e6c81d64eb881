"""The concept folder: the user's input to `lego invert` (Lego §3: I = I_C ∪ I_C̄, one exemplar subject S_e).

    from lego_inversion.concept import load_concept
    spec = load_concept("examples/melted_cube")     # validates everything, raises UserError on bad input
    spec.with_images, spec.without_images, spec.tokens, spec.render("with", subject="<subj>")

Layout:
    my_concept/
      with/       images that show the concept on the exemplar subject (I_C)
      without/    the same subject without it (I_C̄)
      concept.toml

concept.toml (every key; `examples/concept.example.toml` is the commented version):
    name = "melted"                      # optional, default: the folder name; `{melted}` in generation prompts
    description = "melted"               # optional natural-language text of the concept (text-only baseline)
    [subject]
    init = "cube"                        # word(s) that initialise <subj>; also the subject's text for TI
    token = "<subj>"                     # optional
    [[concept]]                          # one table per concept token (multi-embedding concepts, §4.4)
    token = "<melted>"
    init = "melted"
    positives = ["melted", "molten"]     # P_i of Eq. 2 (multi-word phrases allowed)
    negatives = ["solid", "intact"]      # N_i of Eq. 2
    [prompts]
    without = "a photo of a {subject}"
    with = "a photo of a {subject} that is {concept}"
    [captions]                           # optional per-image templates, keyed by path relative to the folder
    "with/side.png" = "a side view of a {subject} that is {concept}"
    [validation]                         # optional: new subjects for the trainer's validation grid
    subjects = ["teddy bear"]
    [evaluation]                         # optional: read by `lego evaluate`
    questions = ["Is the {target} melted?"]
    count = 3                            # cardinality concepts only
    [toyworld]                           # optional free-form ground truth (toy world examples)
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .images import list_images, load_image
from .documents import read_document
from .prompts import check_template, fill

TOP_KEYS = {"name", "description", "subject", "concept", "prompts", "captions", "validation", "evaluation", "toyworld"}
SUBJECT_KEYS = {"init", "token"}
CONCEPT_KEYS = {"token", "init", "positives", "negatives"}
PROMPT_KEYS = {"with", "without"}
VALIDATION_KEYS = {"subjects", "prompt"}
EVALUATION_KEYS = {"questions", "count", "targets"}
_TOKEN_RE = re.compile(r"^\S+$")


@dataclass(frozen=True)
class ConceptToken:
    """One learned concept embedding <cpt_i> with its context sets (P_i, N_i) of Eq. 2."""

    token: str
    init: str
    positives: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    suggested: tuple[str, ...] = ()   # which of the two the trainer proposed (lexicon.py), not the TOML


@dataclass
class ConceptSpec:
    """A validated concept folder."""

    root: Path
    name: str
    description: str
    subject_init: str
    subject_token: str
    concepts: list[ConceptToken]
    prompts: dict[str, str]
    captions: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    toyworld: dict[str, Any] = field(default_factory=dict)
    with_images: list[Path] = field(default_factory=list)
    without_images: list[Path] = field(default_factory=list)

    @property
    def tokens(self) -> list[str]:
        """Concept tokens in prompt order (<cpt_1> ... <cpt_n>)."""
        return [c.token for c in self.concepts]

    def caption(self, image: Path, kind: str, subject: str, concept: str | None = None) -> str:
        """The training prompt for one image: its caption override or the `kind` template, filled in.

        `subject` is what `{subject}` becomes: the <subj> token with Subject Separation (§4.3), otherwise the
        subject's words (`subject.init`), as in Textual Inversion / ReVersion. `concept` is what `{concept}`
        becomes (default: the concept tokens in order).
        """
        template = self.captions.get(image.relative_to(self.root).as_posix(), self.prompts[kind])
        return fill(template, {"subject": subject, "concept": " ".join(self.tokens) if concept is None else concept},
                    where=f"{self.root / 'concept.toml'}: caption of {image.name}")

    def concept_prompts(self, concept: str, subjects: list[str]) -> list[str]:
        """`concept` (token text) on each subject, in the validation prompt if there is one, else the `with` one."""
        template = self.validation.get("prompt") or self.prompts["with"]
        return [fill(template, {"subject": s, "concept": concept}, where=f"{self.root / 'concept.toml'}: "
                     "validation.prompt") for s in subjects]

    def with_vectors(self, k: int) -> ConceptSpec:
        """k embedding vectors per [[concept]] token: <cpt> -> <cpt> <cpt_1> ... <cpt_{k-1}>, each with the token's
        init word and context sets (InversionConfig.vectors_per_token); k = 1 is this spec."""
        def name(token: str, j: int) -> str:
            return token if j == 0 else f"{token[:-1]}_{j}>" if token.endswith(">") else f"{token}_{j}"

        return self if k <= 1 else dataclasses.replace(
            self, concepts=[dataclasses.replace(c, token=name(c.token, j)) for c in self.concepts for j in range(k)])

    def fingerprint(self) -> str:
        """SHA-256 of concept.toml and every image (names and bytes): what a run learned from."""
        digest = hashlib.sha256((self.root / "concept.toml").read_bytes())
        for path in [*self.with_images, *self.without_images]:
            digest.update(path.relative_to(self.root).as_posix().encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "root": str(self.root),
            "subject": {"init": self.subject_init, "token": self.subject_token},
            "concept": [c.__dict__ | {"positives": list(c.positives), "negatives": list(c.negatives)}
                        for c in self.concepts],
            "prompts": self.prompts,
            "captions": self.captions,
            "validation": self.validation,
            "evaluation": self.evaluation,
            "toyworld": self.toyworld,
            "reference_images": {
                "with": [str(p) for p in self.with_images],
                "without": [str(p) for p in self.without_images],
            },
        }


def _fail(where: str, message: str) -> UserError:
    return UserError(f"{where}: {message}")


def _unknown(where: str, table: dict, allowed: set[str], what: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise _fail(where, f"unknown key {extra[0]!r} in {what}; allowed keys: {', '.join(sorted(allowed))}")


def _string(where: str, value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"{key} must be a non-empty string")
    return value.strip()


def _words(where: str, value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(where, f"{key} must be a list of non-empty strings, e.g. {key} = [\"melted\", \"molten\"]")
    return tuple(v.strip() for v in value)


def _check_template(where: str, key: str, template: str, kind: str) -> None:
    """Training templates: {subject} always, {concept} exactly in the `with` kind (what the images show)."""
    required = ("subject", "concept") if kind == "with" else ("subject",)
    allowed = ("subject", "concept") if kind != "without" else ("subject",)
    check_template(template, allowed, where=f"{where}: {key}", required=required)


def _images(root: Path, kind: str, required: bool) -> list[Path]:
    folder = root / kind
    if not folder.is_dir():
        if required:
            raise UserError(f"{folder}: missing folder; put the images {_KIND_TEXT[kind]} there")
        return []
    images = list_images(folder)
    if required and not images:
        raise UserError(f"{folder}: no images (.png/.jpg/.webp/...); add the images {_KIND_TEXT[kind]}")
    for path in images:
        load_image(path)  # fail now, naming the file, not in the middle of training
    return images


_KIND_TEXT = {"with": "that show the concept", "without": "of the same subject without the concept"}


def parse_concept_toml(path: Path) -> dict[str, Any]:
    return read_document(path, missing="every concept folder needs a concept.toml (see examples/)",
                         fix="fix the syntax")


def load_concept(root: str | Path, require_without: bool = True, check_images: bool = True) -> ConceptSpec:
    """Read and validate a concept folder. Raises `UserError` (one line, file and field named) on bad input."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; pass a concept folder with with/, without/ and concept.toml")
    where = str(root / "concept.toml")
    data = parse_concept_toml(root / "concept.toml")
    _unknown(where, data, TOP_KEYS, "the top level")

    subject = data.get("subject")
    if not isinstance(subject, dict):
        raise _fail(where, "missing [subject] table with init = \"<word for the exemplar subject>\"")
    _unknown(where, subject, SUBJECT_KEYS, "[subject]")
    subject_init = _string(where, subject.get("init"), "subject.init")
    subject_token = _string(where, subject.get("token", "<subj>"), "subject.token")

    tables = data.get("concept")
    if not isinstance(tables, list) or not tables:
        raise _fail(where, "missing [[concept]] table(s): one per concept token, with token and init")
    concepts = []
    for i, table in enumerate(tables):
        key = f"concept[{i}]"
        if not isinstance(table, dict):
            raise _fail(where, f"{key} must be a table")
        _unknown(where, table, CONCEPT_KEYS, f"[[concept]] {i}")
        concepts.append(ConceptToken(
            token=_string(where, table.get("token"), f"{key}.token"),
            init=_string(where, table.get("init"), f"{key}.init"),
            positives=_words(where, table.get("positives"), f"{key}.positives"),
            negatives=_words(where, table.get("negatives"), f"{key}.negatives"),
        ))
    all_tokens = [subject_token] + [c.token for c in concepts]
    for token in all_tokens:
        if not _TOKEN_RE.match(token) or token in ("{subject}", "{concept}"):
            raise _fail(where, f"token {token!r} must be one word without spaces, e.g. \"<melted>\"")
    duplicates = sorted({t for t in all_tokens if all_tokens.count(t) > 1})
    if duplicates:
        raise _fail(where, f"token {duplicates[0]!r} is used twice; every token must be unique")

    prompts = data.get("prompts", {})
    if not isinstance(prompts, dict):
        raise _fail(where, "[prompts] must be a table")
    _unknown(where, prompts, PROMPT_KEYS, "[prompts]")
    prompts = {
        "without": _string(where, prompts.get("without", "a photo of a {subject}"), "prompts.without"),
        "with": _string(where, prompts.get("with", "a photo of a {subject} that is {concept}"), "prompts.with"),
    }
    for kind, template in prompts.items():
        _check_template(where, f"prompts.{kind}", template, kind)

    captions = data.get("captions", {})
    if not isinstance(captions, dict) or not all(isinstance(v, str) for v in captions.values()):
        raise _fail(where, "[captions] must map image paths (e.g. \"with/a.png\") to template strings")
    for rel, template in captions.items():
        kind = rel.split("/", 1)[0]
        if kind not in PROMPT_KEYS or not (root / rel).is_file():
            raise _fail(where, f"captions key {rel!r} is not an image under with/ or without/")
        _check_template(where, f"captions.{rel!r}", template, kind)

    validation = data.get("validation", {})
    evaluation = data.get("evaluation", {})
    for table, allowed, what in ((validation, VALIDATION_KEYS, "[validation]"), (evaluation, EVALUATION_KEYS,
                                                                                "[evaluation]")):
        if not isinstance(table, dict):
            raise _fail(where, f"{what} must be a table")
        _unknown(where, table, allowed, what)
    _words(where, validation.get("subjects"), "validation.subjects")
    if "prompt" in validation:
        _check_template(where, "validation.prompt", _string(where, validation["prompt"], "validation.prompt"),
                        "with")
    _words(where, evaluation.get("questions"), "evaluation.questions")
    _words(where, evaluation.get("targets"), "evaluation.targets")
    count = evaluation.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise _fail(where, "evaluation.count must be a positive integer (the number of subjects)")
    toyworld = data.get("toyworld", {})
    if not isinstance(toyworld, dict):
        raise _fail(where, "[toyworld] must be a table")

    name = _string(where, data.get("name", root.name), "name")
    description = _string(where, data.get("description", " ".join(c.init for c in concepts)), "description")
    return ConceptSpec(
        root=root, name=name, description=description, subject_init=subject_init, subject_token=subject_token,
        concepts=concepts, prompts=prompts, captions=captions, validation=validation, evaluation=evaluation,
        toyworld=toyworld,
        with_images=_images(root, "with", required=True) if check_images else [],
        without_images=_images(root, "without", required=require_without) if check_images else [],
    )
