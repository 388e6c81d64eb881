"""Reading the small TOML/JSON documents users hand us, with one-line errors.

    data = read_document(path, missing="every concept folder needs a concept.toml", fix="fix the syntax")

The format follows the suffix (.toml, else JSON). A missing file, bad syntax, bad encoding or a top level that is
not a table/object each become one `UserError` that names the file and says what to do; the writers' side of the
same rule is `atomic.py`.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from .errors import UserError


def read_document(path: str | Path, *, fix: str, missing: str = "") -> dict[str, Any]:
    """Parse `path` into a dict. `fix`: the remedy for bad content; `missing`: what to say when it does not exist."""
    path = Path(path)
    toml = path.suffix == ".toml"
    kind = "TOML" if toml else "JSON"
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UserError(f"{path}: missing" + (f"; {missing}" if missing else "")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({exc}); {fix}") from None
    try:
        data = tomllib.loads(text) if toml else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid {kind} ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: must hold a {kind} object; {fix}")
    return data
