"""The package docstring's entry points exist (they are what a newcomer tries first)."""

import importlib
import re

import lego_inversion


def test_documented_entry_points_import():
    entries = re.findall(r"from (lego_inversion[\w.]*) import (\w+)", lego_inversion.__doc__)
    assert len(entries) >= 6
    for module, name in entries:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
