"""Would choosing per run between Lego and other methods by the kept look score help? (docs/inversion_quality.md (ac))

    PYTHONPATH=src python3 benchmarks/method_selection.py runs/base_ex runs/ti3_ex runs/sscl3_ex \
        --base lego --candidates ti cl-only
    PYTHONPATH=src python3 benchmarks/method_selection.py runs/jobs2_ex --candidates frozen300=runs/screen/frozen300_ex

Look selection (`--select-by look`) keeps each run's best rows by the concept's look on other subjects, drawn from
noise that depends on neither the seed nor the method (selection.py), so the kept scores of two methods' runs on the
same concept and seed compare. For every (concept, seed) that the base method and each candidate have (finished
runs with a selection.json, and a scored cell in the ablation folders' cells/), the run with the best kept score is
chosen (ties: the base method); its evaluation cell is paired with the base method's. Prints, for the base method
and each candidate set, how often each method was chosen, and the chosen − base difference in success, clean hits
and leakage (mean, 95 % bootstrap interval over the cells); then, for the same cost within the base method, the
choice between each seed and the concept's next seed. A candidate LABEL=FOLDER is the base method's runs and cells
of another ablation folder (a lever setting), so the choice is between two settings of one method. Trains and
generates nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from seed_agreement import find_runs  # noqa: E402
from toyworld_ablation import bootstrap_ci, load_cells  # noqa: E402

from lego_inversion.sweep import look_records  # noqa: E402

METRICS = ("success", "clean", "leakage")


def kept_scores(folders: list[Path], method: str) -> dict[tuple[str, int], float]:
    """(concept, seed) -> the look score of the rows a finished run kept (its selection.json)."""
    scores = {}
    for concept, runs in find_runs(folders, method).items():
        for seed, run in runs.items():
            record = look_records({seed: run})
            if record is not None:
                scores[(concept, seed)] = float(record[seed]["score"])
    return scores


def choose(scores: dict[str, dict], base: str, candidates: list[str]) -> dict[tuple[str, int], str]:
    """(concept, seed) -> the method whose kept score is best, over the keys every method has; ties go to `base`,
    then to the earlier candidate."""
    methods = [base, *candidates]
    keys = set.intersection(*(set(scores[m]) for m in methods))
    return {k: max(methods, key=lambda m: (scores[m][k], -methods.index(m))) for k in sorted(keys)}


def source(candidate: str, folders: list[Path], base: str) -> tuple[str, list[Path], str]:
    """(label, folders, method) of a candidate: a method of `folders`, or LABEL=FOLDER[,FOLDER]: the base method's
    runs there."""
    label, _, folder = candidate.partition("=")
    return (label, [Path(f) for f in folder.split(",")], base) if folder else (candidate, folders, candidate)


def compare(folders: list[Path], base: str, candidates: list[str]) -> dict:
    """{"cells", "picks": {label: n}, metric: (mean, low, high) of chosen − base}."""
    sources = [source(c, folders, base) for c in [base, *candidates]]
    labels = [label for label, _, _ in sources]
    cells = {label: load_cells(where, m) for label, where, m in sources}
    scores = {label: {k: v for k, v in kept_scores(where, m).items() if k in cells[label]}
              for label, where, m in sources}
    picks = choose(scores, base, labels[1:])
    if not picks:
        return {"cells": 0}
    out = {"cells": len(picks), "picks": {label: sum(v == label for v in picks.values()) for label in labels}}
    for metric in METRICS:
        out[metric] = bootstrap_ci([cells[m][k][metric] - cells[base][k][metric] for k, m in picks.items()])
        out[f"base_{metric}"] = sum(cells[base][k][metric] for k in picks) / len(picks)
    return out


def compare_seeds(folders: list[Path], base: str) -> dict:
    """The same choice at the same cost within one method: each (concept, seed) of `base` against the next seed of
    that concept (cyclically over its seeds); ties keep the first.
    {"cells", metric: (mean, low, high) of chosen − own}."""
    cells, scores = load_cells(folders, base), kept_scores(folders, base)
    keys = sorted(k for k in cells if k in scores)
    by_concept: dict[str, list[int]] = {}
    for concept, seed in keys:
        by_concept.setdefault(concept, []).append(seed)
    chosen = {}
    for concept, seed in keys:
        seeds = by_concept[concept]
        if len(seeds) > 1:
            other = (concept, seeds[(seeds.index(seed) + 1) % len(seeds)])
            chosen[(concept, seed)] = other if scores[other] > scores[(concept, seed)] else (concept, seed)
    if not chosen:
        return {"cells": 0}
    return {"cells": len(chosen), **{metric: bootstrap_ci([cells[c][metric] - cells[k][metric]
                                                          for k, c in chosen.items()]) for metric in METRICS}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="ablation output folders (runs/ and cells/)")
    ap.add_argument("--base", default="lego")
    ap.add_argument("--candidates", nargs="+", default=["ti"],
                    help="methods to choose among with the base, or LABEL=FOLDER: the base method's runs there")
    args = ap.parse_args(argv)
    for folder in [*args.folders, *(f for c in args.candidates for f in source(c, [], args.base)[1])]:
        if not (folder / "runs").is_dir():
            print(f"method_selection: error: {folder}: no runs/ folder; pass toyworld_ablation.py --out folders",
                  file=sys.stderr)
            return 2
    sets = [[c] for c in args.candidates] + ([args.candidates] if len(args.candidates) > 1 else [])
    print(f"| {args.base} or … | cells | chosen | " + " | ".join(f"{m}: {args.base} → chosen (paired)"
                                                             for m in METRICS) + " |")
    print("|---" * 6 + "|")
    for cands in sets:
        r = compare(args.folders, args.base, cands)
        if not r["cells"]:
            print(f"| {' '.join(cands)} | 0 | | | | |")
            continue
        picked = ", ".join(f"{m} {n}" for m, n in r["picks"].items())
        print(f"| {' '.join(cands)} | {r['cells']} | {picked} | " + " | ".join(
            f"{r[f'base_{m}']:.3f} → {r[f'base_{m}'] + r[m][0]:.3f} ({r[m][0]:+.3f} [{r[m][1]:+.3f}, {r[m][2]:+.3f}])"
            for m in METRICS) + " |")
    r = compare_seeds(args.folders, args.base)
    if r["cells"]:
        print(f"| another {args.base} seed (same cost) | {r['cells']} | | " + " | ".join(
            f"{r[m][0]:+.3f} [{r[m][1]:+.3f}, {r[m][2]:+.3f}]" for m in METRICS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
