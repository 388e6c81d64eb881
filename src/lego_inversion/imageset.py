"""`images.jsonl`: the manifest of a generated image set (`lego generate`, `lego evaluate`), read by the study app.

    write_manifest(folder, [{"file": "0000.png", "prompt": ..., "seed": 3, "subject": "ball", "method": "lego"}])
    rows = read_manifest(folder / "images.jsonl")     # UserError naming file:line on a bad line

One JSON object per line, each with at least "file" (a name inside the folder); the other fields are
"prompt", "expanded_prompt", "seed", "concepts", "subject", "method", "model".
"""

from __future__ import annotations

import json
from pathlib import Path

from .atomic import atomic_write_text
from .errors import UserError

MANIFEST = "images.jsonl"


def write_manifest(folder: Path, records: list[dict]) -> Path:
    return atomic_write_text(Path(folder) / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_manifest(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found; an image set is a `lego generate --out` folder with {MANIFEST}")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not valid JSON ({exc.msg}); fix or delete the line") from None
        if not isinstance(row, dict) or not isinstance(row.get("file"), str):
            raise UserError(f"{path}:{n}: each line must be an object with a \"file\" field")
        rows.append(row)
    return rows
