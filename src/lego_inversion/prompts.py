"""Prompt templates: the one place that checks and fills `{placeholder}`s.

    from lego_inversion.prompts import check_template, fill
    check_template("a photo of a {subject} that is {concept}", {"subject", "concept"}, where="prompts.with")
    fill("a photo of a {subject} that is {concept}", {"subject": "<subj>", "concept": "<melted>"})
    fill("a {melted} {frozen} bear", {"melted": "<melted>", "frozen": "<frozen> <ice>"})

A placeholder is `{name}` or `{name.part}` (letters, digits, `_`, `-`, `.`); `{{` and `}}` stand for literal
braces. A lone brace, an empty `{}`, or a name that is not allowed is an error naming where the template came
from and the names that are allowed, so a bad template fails when it is read, before any work.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .errors import UserError

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)?$")


def _parts(template: str, where: str) -> list[tuple[str, bool]]:
    """Split into (text, False) and (placeholder name, True) pieces."""
    if not isinstance(template, str):
        raise UserError(f"{where}: a prompt template must be a string, not {template!r}")
    pieces, pos = [], 0
    for m in _TOKEN.finditer(template):
        pieces.append((template[pos:m.start()], False))
        token = m.group(0)
        if token in ("{{", "}}"):
            pieces.append((token[0], False))
        elif m.group(1) is None:
            raise UserError(f"{where}: unmatched {token!r} in {template!r}; write {token * 2} for a literal brace")
        else:
            name = m.group(1).strip()
            if not _NAME.match(name):
                raise UserError(f"{where}: {{{m.group(1)}}} in {template!r} is not a placeholder name")
            pieces.append((name, True))
        pos = m.end()
    pieces.append((template[pos:], False))
    return pieces


def placeholders(template: str, where: str = "prompt") -> list[str]:
    """The placeholder names of `template`, in order (repeats kept)."""
    return [text for text, is_name in _parts(template, where) if is_name]


def check_template(template: str, allowed: Iterable[str], where: str = "prompt",
                   required: Iterable[str] = ()) -> None:
    """UserError unless every placeholder is in `allowed` and every name in `required` appears."""
    allowed = set(allowed)
    names = placeholders(template, where)
    for name in names:
        if name not in allowed:
            known = ", ".join("{" + a + "}" for a in sorted(allowed)) or "none"
            raise UserError(f"{where}: unknown placeholder {{{name}}} in {template!r}; allowed: {known}")
    for name in required:
        if name not in names:
            raise UserError(f"{where} must contain {{{name}}} (it is {template!r})")


def fill(template: str, values: Mapping[str, str], where: str = "prompt") -> str:
    """Replace every placeholder by `values[name]`; an unknown name is a UserError listing the known ones."""
    check_template(template, values.keys(), where)
    return "".join(values[text] if is_name else text for text, is_name in _parts(template, where))
