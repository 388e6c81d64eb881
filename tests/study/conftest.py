"""Fixtures for the study tests: tiny fake `lego generate` image sets and concept folders, built on the fly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lego_inversion.manifest import ImageRecord, write_manifest
from lego_inversion.study.create import CreateConfig, create_study
from lego_inversion.study.model import load_study


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)


def make_image_set(folder: Path, method: str | None, concepts: list[str], subjects: list[str], seeds: list[int],
                   salt: int, omit_subject: bool = False, about: tuple[str, ...] | None = None) -> Path:
    """One PNG per (concept, subject, seed) with a distinct colour, plus images.jsonl written the way
    `lego generate` writes it (manifest.write_manifest). `about` overrides the recorded concepts (() = none,
    as for a plain-prompt set made without --about)."""
    records = []
    for ci, concept in enumerate(concepts):
        for si, subject in enumerate(subjects):
            for seed in seeds:
                path = folder / f"{len(records) + 1:04d}.png"
                _png(path, (salt, 10 * ci + si, seed % 256))
                records.append(ImageRecord(
                    path=path, prompt=f"a photo of a {subject} that is {{{concept}}}", seed=seed,
                    expanded_prompt=f"a photo of a {subject} that is <{concept}>", method=method,
                    concepts=(concept,) if about is None else about, subject=None if omit_subject else subject))
    write_manifest(folder, records)
    return folder


def make_concept(folder: Path, name: str, colour: int) -> Path:
    """A `lego invert`-style output: concept.json whose reference paths are relative to a source folder."""
    source = folder.parent / f"{name}_source"
    for i in range(3):
        _png(source / "with" / f"w{i}.png", (200, colour, i))
        _png(source / "without" / f"o{i}.png", (50, colour, i))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "concept.json").write_text(json.dumps({
        "name": name, "root": str(source),
        "reference_images": {"with": [f"with/w{i}.png" for i in range(3)],
                             "without": [f"without/o{i}.png" for i in range(3)]}}))
    return folder


@pytest.fixture
def study_inputs(tmp_path):
    concepts, subjects, seeds = ["melted", "frozen"], ["teddy bear", "cube"], [1, 2]
    lego = make_image_set(tmp_path / "gen_lego", "lego", concepts, subjects, seeds, salt=1)
    ldm = make_image_set(tmp_path / "gen_ldm", None, concepts, subjects, seeds, salt=2)
    cdirs = [make_concept(tmp_path / f"run_{c}", c, 30 * i) for i, c in enumerate(concepts)]
    return {"sets": [f"lego={lego}", f"ldm={ldm}"], "concepts": [str(c) for c in cdirs], "root": tmp_path}


@pytest.fixture
def small_study(study_inputs):
    """8 pairs (2 concepts x 2 subjects x 2 seeds), 1 attention check per concept, 3 raters x 3 per pair."""
    out = study_inputs["root"] / "study"
    create_study(CreateConfig(out=str(out), sets=study_inputs["sets"], concepts=study_inputs["concepts"],
                              raters_per_pair=3, raters=3, attention_checks=1, seed=7))
    return load_study(out)


PG_ENV = "LEGO_STUDY_TEST_PG_URL"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """An answer database: a fresh SQLite file, or the PostgreSQL server scripts/ci_services.sh started."""
    import os

    if request.param == "sqlite":
        return str(tmp_path / "answers.sqlite")
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set: start PostgreSQL with `source scripts/ci_services.sh` (CI does)")
    return url


@pytest.fixture
def study_name():
    """A unique study name, so tests sharing one PostgreSQL database never see each other's rows."""
    import uuid

    return f"test-{uuid.uuid4().hex[:12]}"
