"""`images.jsonl` and `ImageRecord`: what each generated image is, for `lego generate`, `lego evaluate` and the
study app (one record type for all three).

    from lego_inversion.manifest import ImageRecord, write_manifest, read_manifest
    rec = ImageRecord(path=Path("gen/melted/0000.png"), prompt="a photo of a ball that is {melted}", seed=3,
                      subject="ball", method="lego", concepts=("melted",))
    write_manifest(folder, [rec])                    # one JSON object per line, "file" relative to the folder
    records = read_manifest(folder / "images.jsonl") # UserError naming file:line on a bad line

A line holds "file" (a name inside the folder) and optionally "prompt", "expanded_prompt", "seed", "concepts",
"subject", "method", "model". `concepts` names the concepts the image is *about*: the learned concepts applied by
`lego generate --concept`, or the concept a plain-prompt baseline stands in for (`lego generate --about`,
`lego evaluate`'s text method), so image sets of different methods pair up by concept × subject × seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import UserError

MANIFEST = "images.jsonl"
_FIELDS = ("prompt", "expanded_prompt", "seed", "concepts", "subject", "method", "model")


@dataclass(frozen=True)
class ImageRecord:
    """One generated image: its file and how it was made."""

    path: Path
    prompt: str = ""
    seed: int | None = None
    subject: str | None = None             # the target subject ("ball"), as the prompt names it
    method: str | None = None              # lego | ti | cl-only | ss-only | text | ...
    concepts: tuple[str, ...] = ()         # the concepts this image is about (see the module docstring)
    expanded_prompt: str | None = None     # the prompt with learned tokens substituted
    model: str | None = None               # the base model id or folder
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # unknown manifest keys, kept on rewrite

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "concepts", tuple(self.concepts))

    @property
    def concept(self) -> str:
        """The concepts joined by '+' ("melted+frozen" for a composition); '' when about none."""
        return "+".join(self.concepts)

    def to_json(self) -> dict[str, Any]:
        row = dict(self.extra)
        row.update({"file": self.path.name, "prompt": self.prompt, "expanded_prompt": self.expanded_prompt,
                    "seed": self.seed, "concepts": list(self.concepts), "subject": self.subject,
                    "method": self.method, "model": self.model})
        return row

    @classmethod
    def from_json(cls, folder: Path, row: dict[str, Any], where: str = "") -> ImageRecord:
        """A manifest line; `where` ("file:line") names it in errors."""
        where = where or str(Path(folder) / MANIFEST)
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or not row["file"].strip():
            raise UserError(f"{where}: each line must be an object with a \"file\" field")
        name = row["file"]
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise UserError(f"{where}: \"file\" must be a name inside the folder, not {name!r}")
        seed = row.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise UserError(f"{where}: \"seed\" must be an integer, not {seed!r}")
        concepts = row.get("concepts") or []
        if isinstance(concepts, str):
            concepts = [concepts]
        if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
            raise UserError(f"{where}: \"concepts\" must be a list of names")
        text = {k: row.get(k) for k in ("prompt", "expanded_prompt", "subject", "method", "model")}
        for key, value in text.items():
            if value is not None and not isinstance(value, str):
                raise UserError(f"{where}: \"{key}\" must be a string, not {value!r}")
        extra = {k: v for k, v in row.items() if k not in _FIELDS and k != "file"}
        return cls(path=Path(folder) / name, prompt=text["prompt"] or "", seed=seed, subject=text["subject"],
                   method=text["method"], concepts=tuple(concepts), expanded_prompt=text["expanded_prompt"],
                   model=text["model"], extra=extra)


def write_manifest(folder: Path, records: list[ImageRecord]) -> Path:
    """Write `folder/images.jsonl` atomically; every record's file must lie in `folder`."""
    folder = Path(folder)
    for r in records:
        if r.path.parent.resolve() != folder.resolve():
            raise ValueError(f"{r.path} is not inside {folder}")
    return atomic_write_text(folder / MANIFEST,
                             "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records))


def read_manifest(path: Path) -> list[ImageRecord]:
    """The records of an `images.jsonl`; a bad line is a UserError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found; an image set is a `lego generate --out` folder with {MANIFEST}")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not valid JSON ({exc.msg}); fix or delete the line") from None
        records.append(ImageRecord.from_json(path.parent, row, where=f"{path}:{n}"))
    return records
