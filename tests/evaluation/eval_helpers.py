"""Helpers for the evaluation tests: a stand-in generator, learned concept folders, image folders, the CLI.

The stand-in satisfies the `lego_inversion.generation.load_generator` contract (image i depends only on its
prompt and seed) and records every call, so tests can check which seeds each method used.
"""

from __future__ import annotations

import json
import types
import zlib
from pathlib import Path

import numpy as np

CALLS: list[dict] = []


class FakeGenerator:
    def __init__(self, model, concepts, device, dtype):
        self.model, self.concepts = model, [str(c) for c in concepts]
        CALLS.append({"load": True, "model": model, "concepts": self.concepts, "device": device, "dtype": dtype})

    def expand_prompt(self, prompt: str) -> str:
        return prompt

    def generate(self, prompts, seeds, num_inference_steps=50, guidance_scale=None, batch_size=4, progress=True,
                 excite=None, concept_guidance_scale=None, concept_floor=None):
        from PIL import Image

        CALLS.append({"prompts": list(prompts), "seeds": list(seeds), "concepts": self.concepts, "excite": excite,
                      "concept_guidance_scale": concept_guidance_scale, "concept_floor": concept_floor})
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


def make_concept_folder(path: Path, name: str, method: str, exemplars: list[Path], questions=(), count=None,
                        description=None, toyworld=None, base_model="toy") -> Path:
    """A learned concept folder as `lego invert` writes it (the embeddings are never read by the evaluator);
    `toyworld`: the concept TOML's [toyworld] ground truth."""
    from safetensors.torch import save_file
    import torch

    path.mkdir(parents=True)
    save_file({"<" + name + ">": torch.zeros(8)}, str(path / "learned_embeds.safetensors"))
    meta = {"name": name, "method": method, "tokens": [f"<{name}>"], "subject_token": "<subj>",
            "description": description or name, "prompts": {"with": "", "without": ""},
            "evaluation": {"questions": list(questions), "count": count},
            "reference_images": {"with": [], "without": [str(p) for p in exemplars]}, "base_model": base_model,
            "toyworld": toyworld or {}}
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


def write_config(tmp: Path, tiny: dict, num_images: int = 3, metrics=("vqa", "count", "clip", "dino")) -> Path:
    ex = write_images(tmp / "exemplars", 2, seed0=500)
    frozen = make_concept_folder(tmp / "runs/frozen_lego", "frozen", "lego", ex,
                                 questions=["Is the {target} frozen in ice?"], description="frozen in ice")
    frozen_ti = make_concept_folder(tmp / "runs/frozen_ti", "frozen", "ti", ex)
    three = make_concept_folder(tmp / "runs/three", "three", "lego", ex, count=3, description="three")
    cfg = tmp / "eval.toml"
    cfg.write_text(f"""
targets = ["toy bear", "cat"]
num_images = {num_images}
seed = 10
metrics = {json.dumps(list(metrics))}
methods = ["lego", "ti", "text"]
[generation]
num_inference_steps = 2
batch_size = 2
[models]
vqa = "{tiny['vqa']}"
detector = "{tiny['detector']}"
clip = "{tiny['clip']}"
dino = "{tiny['dino']}"
batch_size = 4
[[concepts]]
name = "frozen"
[concepts.methods]
lego = "{frozen}"
ti = "{frozen_ti}"
[[concepts]]
name = "three"
prompt = "a photo of {{concept}} {{target}}s"
[concepts.methods]
lego = "{three}"
""")
    return cfg
