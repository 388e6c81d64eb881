"""Would keeping the checkpoint whose look on validation subjects is best help? (docs/inversion_quality.md (o))

    PYTHONPATH=src python3 benchmarks/inversion_sweep.py --out runs/ckptsel_ex --threads 1 --concepts examples/*/ \\
        --seeds 0 1 2 --images 4 --targets ball star bear cube pyramid heart --eval-at 0 100 200 300 400
    python3 benchmarks/checkpoint_selection.py runs/ckptsel_ex --examples examples [--json OUT.json]
    python3 benchmarks/checkpoint_selection.py --seeds runs/look_ex --method lego   # lego invert's -best choice

The sweep reads every run at each `--eval-at` step (step 0: the initializer words) on six subjects. This script
splits each reading: the *evaluation* targets are the ablation's (ball, star, bear, minus the exemplar's subject),
the *validation* subjects are the others (cube, pyramid, heart, minus the exemplar's), with their own images. For
each run it picks the step whose validation clean-hit rate is highest (ties: the later step, the more trained
rows) and compares that step's evaluation reading with the last step's (what training gives today), paired by
(concept, seed). Also the best (seed, step) of all seeds of a concept against the seeds' mean last step.

`--seeds FOLDER` reads a toyworld_ablation.py folder trained with `--select-by look` instead: per concept, the
seed `lego invert` would copy to <concept>-<method>-best (sweep.best_seed on the runs' selection.json) against the
mean of the seeds' cells.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run_selection import VALIDATION_SUBJECTS  # noqa: E402
from toyworld_ablation import METRICS, bootstrap_ci, score  # noqa: E402

EVALUATION_SUBJECTS = ("ball", "star", "bear")


def split_reading(record: dict, truth: dict, subjects: list[str], images: int) -> dict[str, dict[str, float]]:
    """A sweep reading's transfer predictions (in `subjects` order, the exemplar's left out, `images` each) as
    metrics over the evaluation targets and over the validation subjects."""
    targets = [t for t in subjects if t != truth["subject"] for _ in range(images)]
    preds = record["predictions"]["transfer"]
    if len(preds) != len(targets):
        raise SystemExit(f"{record['concept']} s{record['seed']} step {record['step']}: {len(preds)} transfer "
                         f"images, expected {len(targets)} (--targets / --images as in the sweep)")
    out = {}
    for part, names in (("evaluation", EVALUATION_SUBJECTS), ("validation", VALIDATION_SUBJECTS)):
        scores = [score(p, truth, t) for p, t in zip(preds, targets) if t in names]
        out[part] = {m: float(np.mean([s[m] for s in scores])) for m in METRICS}
    return out


def pick(readings: dict[tuple[int, int], dict], by: str = "clean") -> tuple[int, int]:
    """The (seed, step) of the best validation reading; ties go to the later step (the more trained rows), then
    to the lower seed."""
    return max(readings, key=lambda k: (readings[k]["validation"][by], k[1], -k[0]))


def analyse(folder: Path, examples: Path, subjects: list[str], images: int) -> dict:
    runs: dict[tuple[str, int], dict[int, dict]] = defaultdict(dict)
    for f in sorted((folder / "evals").glob("*.json")):
        r = json.loads(f.read_text())
        truth = tomllib.loads((examples / r["concept"] / "concept.toml").read_text())["toyworld"]
        runs[(r["concept"], r["seed"])][r["step"]] = split_reading(r, truth, subjects, images)
    last = max(s for steps in runs.values() for s in steps)
    runs = {k: v for k, v in runs.items() if last in v}
    result: dict = {"runs": len(runs), "last_step": last, "picked_steps": {}, "per_concept": {}}
    deltas = {m: [] for m in METRICS}
    for (concept, seed), steps in sorted(runs.items()):
        best = pick({(seed, s): v for s, v in steps.items()})[1]
        result["picked_steps"][f"{concept}-s{seed}"] = best
        for m in METRICS:
            deltas[m].append(steps[best]["evaluation"][m] - steps[last]["evaluation"][m])
    result["step_selection_minus_last"] = {m: bootstrap_ci(v) for m, v in deltas.items()}
    result["last"] = {m: float(np.mean([s[last]["evaluation"][m] for s in runs.values()])) for m in METRICS}
    result["step_selected"] = {m: result["last"][m] + float(np.mean(deltas[m])) for m in METRICS}
    concepts = sorted({c for c, _ in runs})
    both, mean_last = {m: [] for m in METRICS}, {m: [] for m in METRICS}
    for c in concepts:
        cands = {(seed, step): v for (cc, seed), steps in runs.items() if cc == c for step, v in steps.items()}
        seed, step = pick(cands)
        chosen = cands[(seed, step)]
        result["per_concept"][c] = {"seed": seed, "step": step,
                                    "success": chosen["evaluation"]["success"],
                                    "mean_last_success": float(np.mean([runs[(c, s)][last]["evaluation"]["success"]
                                                                        for cc, s in runs if cc == c]))}
        for m in METRICS:
            both[m].append(chosen["evaluation"][m])
            mean_last[m].append(np.mean([runs[(c, s)][last]["evaluation"][m] for cc, s in runs if cc == c]))
    result["seed_and_step_selected"] = {m: float(np.mean(both[m])) for m in METRICS}
    result["seed_and_step_minus_mean_last"] = {m: bootstrap_ci(np.array(both[m]) - np.array(mean_last[m]))
                                               for m in METRICS}
    return result


def seed_choice(folder: Path, method: str) -> dict:
    """The cell of the seed `keep_best` picks per concept, against the mean of that concept's cells."""
    from lego_inversion.sweep import best_seed
    from toyworld_ablation import load_cells

    cells = load_cells([folder], method)
    chosen, mean = {m: [] for m in METRICS}, {m: [] for m in METRICS}
    picks = {}
    for concept in sorted({c for c, _ in cells}):
        seeds = sorted(s for c, s in cells if c == concept)
        scores = {s: json.loads((folder / "runs" / f"{concept}-{method}-s{s}" / "selection.json").read_text())["score"]
                  for s in seeds}
        picks[concept] = best = best_seed(scores)
        for m in METRICS:
            chosen[m].append(cells[(concept, best)][m])
            mean[m].append(np.mean([cells[(concept, s)][m] for s in seeds]))
    return {"picked_seed": picks, "chosen": {m: float(np.mean(v)) for m, v in chosen.items()},
            "seeds_mean": {m: float(np.mean(v)) for m, v in mean.items()},
            "chosen_minus_mean": {m: bootstrap_ci(np.array(chosen[m]) - np.array(mean[m])) for m in METRICS}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, nargs="?", help="an inversion_sweep.py output folder")
    ap.add_argument("--examples", type=Path, help="the concept folders the sweep trained on")
    ap.add_argument("--seeds", type=Path, help="instead: a toyworld_ablation.py folder trained with --select-by look")
    ap.add_argument("--method", default="lego", help="--seeds: the method whose runs to read")
    ap.add_argument("--subjects", nargs="+", default=["ball", "star", "bear", "cube", "pyramid", "heart"],
                    help="the sweep's --targets, in its order")
    ap.add_argument("--images", type=int, default=4, help="the sweep's --images")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.seeds is not None:
        result = seed_choice(args.seeds, args.method)
    elif args.folder is None or args.examples is None:
        ap.error("give a sweep folder and --examples, or --seeds FOLDER")
    else:
        result = analyse(args.folder, args.examples, args.subjects, args.images)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
