"""Would choosing among seeds by a validation look help? (docs/inversion_quality.md (n))

    PYTHONPATH=src python3 benchmarks/run_selection.py runs/abl_hue6_ex runs/seeds9_ex --examples examples \
        --out runs/valsel_ex --groups 0,3,6 1,4,7 2,5,8

One run's success on a concept is a lottery between seeds ((m)). A user who trains several seeds picks the run
whose validation grid shows the concept best. This measures what that choice is worth, with the oracle standing
in for the person (or for `lego evaluate`'s VQA on a real model): every finished run of the ablation folders
generates --images images of its concept on each *validation* subject, the toy subjects that are neither the
exemplar's nor an evaluation target (cube, pyramid, heart minus the exemplar's; the ablation's targets are ball,
star, bear), with noise seeds no evaluation uses (`VALIDATION_SEED + 1000·seed + i`). Each run gets a validation
score (clean hits: the look, the subject, no leakage). For each group of seeds, the run with the best score (ties:
the first seed) is "selected", and its evaluation cell (from the ablation folders' cells/) is compared with the
mean of the group's cells, and with the group's first seed (what one run gives). Also the mean over every 3-seed
subset of the seeds present. Results: OUT/validation/*.json (one per run, resumable) and OUT/results.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed_agreement import find_runs  # noqa: E402
from toyworld_ablation import bootstrap_ci, load_cells, score, with_prompts  # noqa: E402

VALIDATION_SUBJECTS = ("cube", "pyramid", "heart")
VALIDATION_SEED = 777_000


def validation_targets(truth: dict) -> list[str]:
    return [s for s in VALIDATION_SUBJECTS if s != truth["subject"]]


def validate(run: Path, example: Path, images: int, oracle, out: Path) -> dict:
    """The run's validation reading: success / leakage / clean over its validation images (saved, reused)."""
    from lego_inversion.atomic import atomic_write_json
    from lego_inversion.generation import load_generator

    f = out / "validation" / f"{run.name}.json"
    if f.is_file():
        return json.loads(f.read_text())
    data = tomllib.loads((example / "concept.toml").read_text())
    truth = data["toyworld"]
    seed = int(run.name.rsplit("-s", 1)[1])
    targets = [t for t in validation_targets(truth) for _ in range(images)]
    gen = load_generator(None, [run])
    prompts = with_prompts(data["prompts"]["with"], targets, gen.expand_prompt("{concept}"), where=str(example))
    noise = [VALIDATION_SEED + 1000 * seed + i for i in range(len(prompts))]
    pics = gen.generate(prompts, noise, num_inference_steps=25, batch_size=16, progress=False)
    scores = [score(p, truth, t) for p, t in zip(oracle.predict(pics), targets)]
    result = {"run": run.name, "n_images": len(scores),
              **{m: float(np.mean([s[m] for s in scores])) for m in ("success", "leakage", "clean")}}
    atomic_write_json(f, result)
    return result


def select(val: dict[int, dict], group: list[int], by: str = "clean") -> int:
    """The group's seed with the best validation score; ties go to the earlier seed in the group."""
    return max(group, key=lambda s: (val[s][by], -group.index(s)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--examples", type=Path, required=True, help="the concept folders the runs were trained on")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--method", default="lego")
    ap.add_argument("--images", type=int, default=4, help="validation images per validation subject")
    ap.add_argument("--groups", nargs="*", default=["0,3,6", "1,4,7", "2,5,8"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    from lego_inversion.toyworld.oracle import Oracle

    torch.set_num_threads(args.threads)
    runs = find_runs(args.folders, args.method)
    cells = load_cells(args.folders, args.method)
    groups = [[int(s) for s in g.split(",")] for g in args.groups]
    missing = [f"{c} s{s}" for c, by in runs.items() for g in groups for s in g if s not in by or (c, s) not in cells]
    if not runs or missing:
        print(f"run_selection: error: need a finished run and a cell for every seed of --groups "
              f"(missing: {', '.join(missing[:5]) or 'every run'})", file=sys.stderr)
        return 2
    oracle = Oracle.load()
    val = {c: {s: validate(r, args.examples / c, args.images, oracle, args.out) for s, r in sorted(by.items())}
           for c, by in sorted(runs.items())}
    result = {"groups": {}, "subsets": {}}
    for metric in ("success", "clean"):
        picked, mean, first = [], [], []
        for c in val:
            for g in groups:
                picked.append(cells[(c, select(val[c], g))][metric])
                mean.append(np.mean([cells[(c, s)][metric] for s in g]))
                first.append(cells[(c, g[0])][metric])
        result["groups"][metric] = {
            "selected": float(np.mean(picked)), "group_mean": float(np.mean(mean)), "first_seed": float(np.mean(first)),
            "selected_minus_group_mean": bootstrap_ci(np.array(picked) - np.array(mean)),
            "selected_minus_first_seed": bootstrap_ci(np.array(picked) - np.array(first))}
        subs = [cells[(c, select(val[c], list(sub)))][metric] - np.mean([cells[(c, s)][metric] for s in sub])
                for c in val for sub in itertools.combinations(sorted(val[c]), 3)]
        result["subsets"][metric] = float(np.mean(subs))
    corr = [float(np.corrcoef([val[c][s]["clean"] for s in val[c]], [cells[(c, s)]["clean"] for s in val[c]])[0, 1])
            for c in val if np.std([val[c][s]["clean"] for s in val[c]]) > 0]
    result["validation_vs_evaluation_clean_correlation"] = {"per_concept": corr, "mean": float(np.mean(corr))}
    from lego_inversion.atomic import atomic_write_json

    atomic_write_json(args.out / "results.json", result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
