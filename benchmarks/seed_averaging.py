"""Rows averaged over seeds against one run and the best-looking seed (docs/inversion_quality.md (v)).

    PYTHONPATH=src python3 benchmarks/seed_averaging.py runs/curves_ex runs/curves9_ex --groups 0,1,2 3,4,5 6,7,8 \
        --out runs/avg3_ex                                          # and _ho with --examples benchmarks/heldout
    PYTHONPATH=src python3 benchmarks/seed_averaging.py runs/fresh_ex --groups 9,10,11,12,13 --out runs/avg5_ex
    PYTHONPATH=src python3 benchmarks/seed_averaging.py runs/fresh_ex --groups 9,10,11,12,13 --top 3 --out runs/top3_ex

For every concept of toyworld_ablation.py output folders and every group of seeds, `lego_inversion.averaging`
averages the group's kept rows (what `lego invert --seed ... --average-seeds` writes as <concept>-<method>-mean/).
The average is generated once with each member seed's evaluation noise (the ablation's targets and noise:
toyworld_ablation.read_images) and read by the oracle, so each reading pairs with that seed's own cell. Against:
one run (the members' cells) and the best-looking member (the highest kept look score in selection.json, ties to the
lower seed, as `keep_best`; its cell). With `--top K` only the group's K best-looking members are averaged.
Intervals: 95 % bootstrap over concepts of the paired difference from one run.
Results: OUT/results.json; each average folder is kept under OUT/averages/.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from toyworld_ablation import bootstrap_ci, load_cells, read_images, with_prompts  # noqa: E402

METRICS = ("success", "clean", "leakage")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", type=Path, nargs="+", help="toyworld_ablation.py --out folders (runs/, cells/)")
    ap.add_argument("--examples", type=Path, default=ROOT / "examples", help="the concept folders of the runs")
    ap.add_argument("--groups", nargs="+", required=True, help="seed groups to average, e.g. 0,1,2 3,4,5")
    ap.add_argument("--method", default="lego")
    ap.add_argument("--top", type=int, default=0,
                    help="average only the K best-looking members of each group (kept look score, ties to the lower "
                         "seed), still read with every member's noise; 0: all members")
    ap.add_argument("--images", type=int, default=6, help="images per target subject (as the ablation)")
    ap.add_argument("--targets", nargs="*", default=["ball", "star", "bear"])
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.top == 1 or args.top < 0:
        ap.error("--top takes 0 (all) or at least 2 members")

    import torch

    from lego_inversion.atomic import atomic_write_json
    from lego_inversion.averaging import average_runs
    from lego_inversion.generation import load_generator
    from lego_inversion.sweep import best_seed, best_seeds, look_records
    from lego_inversion.toyworld.oracle import Oracle

    torch.set_num_threads(args.threads)
    groups = [[int(s) for s in g.split(",")] for g in args.groups]
    cells, oracle = load_cells(args.folders, args.method), Oracle.load()
    concepts = sorted({c for c, _ in cells})
    runs = {(c, s): f / "runs" / f"{c}-{args.method}-s{s}" for f in args.folders for c, s in cells
            if (f / "runs" / f"{c}-{args.method}-s{s}").is_dir()}
    readings, rows = {}, {m: {"average": [], "best": [], "one run": []} for m in METRICS}
    for concept in concepts:
        data = tomllib.loads((args.examples / concept / "concept.toml").read_text())
        truth = data["toyworld"]
        targets = [t for t in args.targets if t != truth["subject"] for _ in range(args.images)]
        for group in groups:
            looks = {s: r["score"] for s, r in look_records({s: runs[(concept, s)] for s in group}).items()}
            members = sorted(best_seeds(looks, args.top)) if args.top else group  # as --average-seeds K
            folder = average_runs([runs[(concept, s)] for s in members],
                                  args.out / "averages" / f"{concept}-{'-'.join(map(str, members))}")
            gen = load_generator(None, [folder])
            prompts = with_prompts(data["prompts"]["with"], targets, gen.expand_prompt("{concept}"), where=concept)
            for seed in group:
                readings[f"{concept}-{seed}"] = read_images(gen, prompts, targets, truth, seed, args, oracle)[1]
            best = cells[(concept, best_seed(looks))]
            for m in METRICS:
                rows[m]["average"].append(np.mean([readings[f"{concept}-{s}"][m] for s in group]))
                rows[m]["best"].append(best[m])
                rows[m]["one run"].append(np.mean([cells[(concept, s)][m] for s in group]))
        print(concept, {m: round(float(np.mean(rows[m]["average"][-len(groups):])), 3) for m in METRICS}, flush=True)

    summary = {}
    print(f"{args.method}: {len(concepts)} concepts, seed groups {args.groups}")
    print("| | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS))
    for name in ("one run", "average", "best"):
        cols = []
        for m in METRICS:
            per_concept = np.reshape(rows[m][name], (len(concepts), len(groups))).mean(1)
            base = np.reshape(rows[m]["one run"], (len(concepts), len(groups))).mean(1)
            mean, lo, hi = bootstrap_ci(per_concept - base)
            summary.setdefault(name, {})[m] = {"mean": float(per_concept.mean()), "paired": [mean, lo, hi]}
            paired = "" if name == "one run" else f" ({mean:+.3f} [{lo:+.2f}, {hi:+.2f}])"
            cols.append(f"{per_concept.mean():.3f}{paired}")
        print(f"| {name} | " + " | ".join(cols) + " |")
    atomic_write_json(args.out / "results.json", {"method": args.method, "groups": groups, "concepts": concepts,
                                                  "summary": summary, "readings": readings})


if __name__ == "__main__":
    main()
