"""Oracle-judged quality of the toy text-to-image model (the issue's quality bar) and a sample grid.

    lego toyworld evaluate-model --n 20 --out runs/toy_eval     # report.json + grid.png

Three prompt sets on fresh seeds: plain prompts "a photo of a {appearance} {subject}" (subject and colour
accuracy), generic-concept prompts as the training captions name them (generic concept present = the
oracle's concept head equals the prompted concept), and the neutral descriptions of the personalized variants
(`data.VARIANT_CAPTIONS`; personalized variant present = concept and variant both right: can the model draw
the looks that inversion has to find?). All numbers come from `toyworld.oracle`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_save_image, atomic_write_json
from .data import VARIANT_CAPTIONS, generic_prompt
from .render import APPEARANCES, CONCEPTS, PLURALS, SUBJECTS, grid


def load_pipeline(model: str | None = None):
    from diffusers import LDMTextToImagePipeline

    from . import model_path

    if model and not (Path(model) / "bert").exists():  # a toy-model export without its text encoder
        model = model_path(model)
    pipe = LDMTextToImagePipeline.from_pretrained(model or model_path())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, prompts: list[str], steps: int = 25, guidance: float = 3.0, seed: int = 0,
             batch: int = 64) -> list:
    """Images for `prompts` (64x64 PIL) with the standard pipeline call; batched, seeded."""
    images = []
    for i in range(0, len(prompts), batch):
        g = torch.Generator().manual_seed(seed + i)
        images += pipe(prompts[i:i + batch], height=64, width=64, num_inference_steps=steps,
                       guidance_scale=guidance, generator=g).images
    return images


def evaluate_model(model: str | None = None, n: int = 10, steps: int = 25, guidance: float = 3.0,
                   seed: int = 0, out: str | Path = "runs/toy_eval") -> dict:
    from tqdm import tqdm

    from .oracle import Oracle

    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    pipe, oracle = load_pipeline(model), Oracle.load()
    jobs = []  # (subject, appearance, concept, prompt)
    for k in range(6 * n):
        s, a = SUBJECTS[k % 6], APPEARANCES[(k // 6 + k) % 6]
        jobs.append((s, a, "none", generic_prompt(s, a, "none")))
    for c in CONCEPTS:
        for _ in range(n):
            s, a = SUBJECTS[rng.integers(6)], APPEARANCES[rng.integers(6)]
            cnt = int(rng.integers(2, 6))
            jobs.append((s, a, c, generic_prompt(s, a, c, cnt)))
    for (c, v), template in VARIANT_CAPTIONS.items():
        for _ in range(n):
            s, a = SUBJECTS[rng.integers(6)], APPEARANCES[rng.integers(6)]
            jobs.append((s, a, f"{c}:{v}", template.format(s=f"{a} {s}", p=f"{a} {PLURALS[s]}")))
    images = []
    for i in tqdm(range(0, len(jobs), 60), desc="generate"):
        images += generate(pipe, [j[3] for j in jobs[i:i + 60]], steps, guidance, seed + i)
    preds = oracle.predict(images)
    rows = [{"subject": j[0], "appearance": j[1], "concept": j[2], "prompt": j[3], "oracle": p}
            for j, p in zip(jobs, preds)]
    plain = [r for r in rows if r["concept"] == "none"]
    conc = [r for r in rows if r["concept"] in CONCEPTS]
    desc = [r for r in rows if ":" in r["concept"]]

    def acc(rs, key):
        return float(np.mean([r["oracle"][key] == r[key] for r in rs])) if rs else float("nan")

    summary = {
        "n_samples": len(rows), "steps": steps, "guidance": guidance,
        "plain_subject_acc": acc(plain, "subject"), "plain_colour_acc": acc(plain, "appearance"),
        "plain_no_concept_rate": acc(plain, "concept"),
        "concept_prompts_subject_acc": acc(conc, "subject"),
        "concept_prompts_colour_acc": acc(conc, "appearance"),
        "generic_concept_present": acc(conc, "concept"),
        "generic_variant_rate": float(np.mean([r["oracle"]["variant"] == 0 for r in conc
                                               if r["oracle"]["concept"] == r["concept"]] or [float("nan")])),
        "per_concept_present": {c: acc([r for r in conc if r["concept"] == c], "concept") for c in CONCEPTS},
        "described_variant_present": _variant_rate(desc),
        "per_described_variant_present": {k: _variant_rate([r for r in desc if r["concept"] == k])
                                          for k in sorted({r["concept"] for r in desc})},
    }
    out = Path(out)
    atomic_write_json(out / "report.json", {"summary": summary, "rows": rows})
    pick = [i for i in range(len(rows)) if i % max(1, n) < 2][:60]  # a few of each kind
    atomic_save_image(out / "grid.png", grid([images[i] for i in pick], cols=12))
    return {"summary": summary, "rows": rows}


def _variant_rate(rows: list[dict]) -> float:
    """Fraction of rows ("concept:variant") whose oracle reading has both that concept and that variant."""
    hits = [f"{r['oracle']['concept']}:{r['oracle']['variant']}" == r["concept"] for r in rows]
    return float(np.mean(hits)) if hits else float("nan")
