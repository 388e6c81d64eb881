"""Helpers shared by the backbone tests: concept folders and frozen-weight snapshots."""

from __future__ import annotations

import torch

from concept_fixtures import CONCEPT_TOML, make_concept, snapshot  # noqa: F401  (re-exported for the tests)

FAST = {"steps": 2, "checkpoint_every": 2, "validation_steps": 1, "validation_images": 1}


def assert_only_new_rows_changed(before: dict, after: dict) -> None:
    assert before.keys() == after.keys() and len(before) > 50
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"frozen weights changed: {changed[:5]}"
