"""read_document: TOML or JSON by suffix; each kind of bad file is one UserError line naming it."""

from __future__ import annotations

import pytest

from lego_inversion.documents import read_document
from lego_inversion.errors import UserError

KW = dict(missing="make it first", fix="fix the syntax")


def test_reads_toml_and_json_by_suffix(tmp_path):
    (tmp_path / "a.toml").write_text('name = "x"\n[sub]\nn = 3\n', encoding="utf-8")
    (tmp_path / "a.json").write_text('{"name": "x", "sub": {"n": 3}}', encoding="utf-8")
    assert read_document(tmp_path / "a.toml", **KW) == read_document(tmp_path / "a.json", **KW) \
        == {"name": "x", "sub": {"n": 3}}


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("gone.toml", None, "gone.toml: missing; make it first"),
    ("bad.toml", b"[subject\n", "bad.toml: not valid TOML ("),
    ("bad.json", b"{'single': 1}", "bad.json: not valid JSON ("),
    ("list.json", b"[1, 2]", "list.json: must hold a JSON object; fix the syntax"),
    ("latin1.json", '{"name": "café"}'.encode("latin-1"), "latin1.json: cannot read it ("),
])
def test_each_failure_is_one_line_naming_the_file(tmp_path, name, content, expected):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError) as info:
        read_document(tmp_path / name, **KW)
    message = str(info.value)
    assert expected in message and "\n" not in message and message.endswith("fix the syntax") == (content is not None)
