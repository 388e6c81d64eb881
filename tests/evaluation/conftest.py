"""Fixtures for the evaluation tests: tiny evaluator models (built once), a stand-in generator, concept folders.

The stand-in satisfies the `lego_inversion.generation.load_generator` contract (image i depends only on its
prompt and seed) and records every call, so tests can check which seeds each method used.
"""

from __future__ import annotations

import json
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_models

CALLS: list[dict] = []


class FakeGenerator:
    def __init__(self, model, concepts, device, dtype):
        self.model, self.concepts = model, [str(c) for c in concepts]
        CALLS.append({"load": True, "model": model, "concepts": self.concepts, "device": device, "dtype": dtype})

    def expand_prompt(self, prompt: str) -> str:
        return prompt

    def generate(self, prompts, seeds, num_inference_steps=50, guidance_scale=None, batch_size=4, progress=True):
        from PIL import Image

        CALLS.append({"prompts": list(prompts), "seeds": list(seeds), "concepts": self.concepts})
        out = []
        for p, s in zip(prompts, seeds):
            noise = np.random.default_rng(s).random((24, 24, 3))  # the same noise for every method
            tint = (zlib.crc32((p + repr(self.concepts)).encode()) % 1000) / 1000.0
            out.append(Image.fromarray((255 * (0.6 * noise + 0.4 * tint)).astype("uint8")))
        return out


def fake_generation_module():
    mod = types.ModuleType("lego_inversion.generation")
    mod.load_generator = lambda model=None, concepts=(), device=None, dtype="float32": FakeGenerator(
        model, concepts, device, dtype)
    return mod


@pytest.fixture
def fake_generation(monkeypatch):
    monkeypatch.setitem(sys.modules, "lego_inversion.generation", fake_generation_module())
    CALLS.clear()
    return CALLS


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Paths of the tiny evaluator models saved with save_pretrained."""
    base = tmp_path_factory.mktemp("tiny_models")
    return {
        "vqa": tiny_models.build_blip2(base / "blip2-t5", "t5"),
        "vqa_opt": tiny_models.build_blip2(base / "blip2-opt", "opt"),
        "detector": tiny_models.build_owlv2(base / "owlv2"),
        "clip": tiny_models.build_clip(base / "clip"),
        "dino": tiny_models.build_dino(base / "dino"),
    }


def make_concept_folder(path: Path, name: str, method: str, exemplars: list[Path], questions=(), count=None,
                        description=None) -> Path:
    """A learned concept folder as `lego invert` writes it (the embeddings are never read by the evaluator)."""
    from safetensors.torch import save_file
    import torch

    path.mkdir(parents=True)
    save_file({"<" + name + ">": torch.zeros(8)}, str(path / "learned_embeds.safetensors"))
    meta = {"name": name, "method": method, "tokens": [f"<{name}>"], "subject_token": "<subj>",
            "description": description or name, "prompts": {"with": "", "without": ""},
            "evaluation": {"questions": list(questions), "count": count},
            "reference_images": {"with": [], "without": [str(p) for p in exemplars]}, "base_model": "toy"}
    (path / "concept.json").write_text(json.dumps(meta))
    return path


def write_images(folder: Path, n: int, seed0: int = 0, size: int = 24) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = (np.random.default_rng(1000 + seed0 + i).random((size, size, 3)) * 255).astype("uint8")
        p = folder / f"img_s{seed0 + i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def run_cli(argv: list[str], monkeypatch=None) -> int:
    """`lego ...` through the real CLI entry point, with only the evaluation command group registered."""
    from lego_inversion import cli

    old = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = ["lego_inversion.evaluation.cli"]
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = old
