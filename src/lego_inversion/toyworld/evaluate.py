"""Oracle-judged quality of the toy text-to-image model and a sample grid.

    lego toyworld evaluate-model --n 20 --out runs/toy_eval     # report.json + grid.png
    evaluate_model(EvaluateConfig(model="runs/toy_model/model", n=10))   # an export (its text encoder is added)

Three prompt sets on fresh seeds: plain prompts "a photo of a {appearance} {subject}" (subject and colour
accuracy), generic-concept prompts as the training captions name them (generic concept present = the
oracle's concept head equals the prompted concept), and the neutral descriptions of the personalized variants
(`training_data.VARIANT_CAPTIONS`; personalized variant present = concept and variant both right: can the model
draw the looks that inversion has to find?). Images come from the project's generator (model resolver, backbone
adapter, one noise seed per image); all numbers come from `toyworld.oracle`. Threads are the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_save_image, atomic_write_json
from ..errors import UserError
from .render import APPEARANCES, CONCEPTS, SUBJECTS, grid
from .training_data import VARIANT_CAPTIONS, described_prompt, generic_prompt

GENERATE_BATCH = 60  # images per sampler call
GRID_PER_KIND = 2  # images of each (prompt set, concept) shown in the grid
GRID_COLUMNS, GRID_MAX = 12, 60
NOISE_STREAM = 1  # the noise seeds come from np.random.default_rng([seed, NOISE_STREAM]), apart from the prompts'


@dataclass
class EvaluateConfig:
    """Settings of `lego toyworld evaluate-model` (one flag per field, toyworld/cli.py)."""

    model: str | None = field(default=None, metadata={
        "help": "model id or pipeline folder, or a toy-model export without its text encoder "
                "(default: the bundled toy model)"})
    n: int = field(default=10, metadata={"help": "samples per (prompt set x concept)"})
    steps: int = field(default=25, metadata={"help": "DDIM sampling steps"})
    guidance: float = field(default=3.0, metadata={"help": "classifier-free guidance scale"})
    seed: int = field(default=0, metadata={"help": "seed of the prompts' subjects/colours and of the noise"})
    out: str = field(default="runs/toy_eval", metadata={"help": "folder for report.json and grid.png"})

    def __post_init__(self) -> None:
        for name in ("n", "steps"):
            if getattr(self, name) < 1:
                raise UserError(f"evaluate-model: {name} must be >= 1 (got {getattr(self, name)})")


def _model_folder(model: str | None) -> str | None:
    """A toy-model export (a `model` folder of `lego toyworld train`, no text encoder) is completed with
    `model_path`; anything else goes to the project's model resolver as given."""
    from . import model_path

    if model and Path(model, "model_index.json").is_file() and not Path(model, "bert").exists():
        return str(model_path(model))
    return model


def prompt_jobs(n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(subject, appearance, concept or "concept:variant" or "none", prompt) for the three prompt sets."""
    rng = np.random.default_rng(seed)
    jobs = []
    for k in range(len(SUBJECTS) * n):
        s, a = SUBJECTS[k % len(SUBJECTS)], APPEARANCES[(k // len(SUBJECTS) + k) % len(APPEARANCES)]
        jobs.append((s, a, "none", generic_prompt(s, a, "none")))
    for c in CONCEPTS:
        for _ in range(n):
            s, a = SUBJECTS[rng.integers(len(SUBJECTS))], APPEARANCES[rng.integers(len(APPEARANCES))]
            count = int(rng.integers(2, 6))
            jobs.append((s, a, c, generic_prompt(s, a, c, count)))
    for c, v in VARIANT_CAPTIONS:
        for _ in range(n):
            s, a = SUBJECTS[rng.integers(len(SUBJECTS))], APPEARANCES[rng.integers(len(APPEARANCES))]
            jobs.append((s, a, f"{c}:{v}", described_prompt(s, a, c, v)))
    return jobs


def evaluate_model(cfg: EvaluateConfig) -> dict:
    """Generate the three prompt sets (cfg.n per concept), read them with the oracle, write report.json and
    grid.png under cfg.out; returns {"summary": ..., "rows": ...} (the report)."""
    from ..generation import load_generator
    from .oracle import Oracle

    n, steps, guidance = cfg.n, cfg.steps, cfg.guidance
    jobs = prompt_jobs(n, cfg.seed)
    generator, oracle = load_generator(_model_folder(cfg.model), []), Oracle.load()
    noise_seeds = np.random.default_rng([cfg.seed, NOISE_STREAM]).integers(2**31, size=len(jobs)).tolist()
    images = generator.generate([j[3] for j in jobs], noise_seeds, num_inference_steps=steps,
                                guidance_scale=guidance, batch_size=GENERATE_BATCH, progress=True)
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
    out = Path(cfg.out)
    atomic_write_json(out / "report.json", {"summary": summary, "rows": rows})
    pick = [i for i in range(len(rows)) if i % n < GRID_PER_KIND][:GRID_MAX]  # a few of each kind
    atomic_save_image(out / "grid.png", grid([images[i] for i in pick], cols=GRID_COLUMNS))
    return {"summary": summary, "rows": rows}


def _variant_rate(rows: list[dict]) -> float:
    """Fraction of rows ("concept:variant") whose oracle reading has both that concept and that variant."""
    hits = [f"{r['oracle']['concept']}:{r['oracle']['variant']}" == r["concept"] for r in rows]
    return float(np.mean(hits)) if hits else float("nan")
