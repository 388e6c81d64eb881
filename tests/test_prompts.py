"""Prompt templates: one checker/filler for every `{placeholder}` in the project."""

import pytest

from lego_inversion.errors import UserError
from lego_inversion.prompts import check_template, fill, placeholders


def test_fill_replaces_names_and_keeps_literal_braces():
    values = {"subject": "<subj>", "concept": "<melted> <ice>", "melted.subject": "<s2>"}
    assert fill("a {subject} that is {concept}", values) == "a <subj> that is <melted> <ice>"
    assert fill("{{json}} {melted.subject}", values) == "{json} <s2>"
    assert placeholders("{a} {b.c} {a}") == ["a", "b.c", "a"]


@pytest.mark.parametrize("template, message", [
    ("a {subjct}", "unknown placeholder {subjct}"),
    ("a {subject", "unmatched '{'"),
    ("a subject}", "unmatched '}'"),
    ("a {} b", "is not a placeholder name"),
    ("a {x y}", "is not a placeholder name"),
])
def test_bad_templates_are_one_line_errors_naming_where(template, message):
    with pytest.raises(UserError) as err:
        check_template(template, {"subject"}, where="concept.toml: prompts.with")
    assert str(err.value).startswith("concept.toml: prompts.with")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_required_names():
    check_template("a {subject} {concept}", {"subject", "concept"}, required=["concept"])
    with pytest.raises(UserError, match=r"must contain \{concept\}"):
        check_template("a {subject}", {"subject", "concept"}, where="w", required=["concept"])
