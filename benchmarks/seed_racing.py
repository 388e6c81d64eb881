"""Racing seeds, read off finished ablation runs (docs/inversion_quality.md (t), (u)).

    PYTHONPATH=src python3 benchmarks/seed_racing.py runs/curves_ex runs/curves9_ex       # (t): seeds 0-8
    PYTHONPATH=src python3 benchmarks/seed_racing.py runs/fresh_ex --k 5 3 --at 100 200 --out runs/race_ex

`lego invert --seed ... --race N` trains K seeds to step N, and only the seed whose look score so far is best (ties:
the lower seed) trains on (sweep.py). Runs are deterministic and a run learns what it would learn alone, so the
winner's result is its full run's ablation cell. This reads every run's `select/score` curve (TensorBoard) and its
cell from toyworld_ablation.py output folders (the initializer's score at step 0, which runs logged before
TensorBoard held it, is scored again: it is the same for every seed of a concept), and gives, for each K and N
("end": the best of K full runs, the `-best` copy without a race), the mean over concepts of the winner's cell,
expected over every K-subset of the seeds present, and the cost in training steps against one run: (K·N + steps − N)
/ steps. Where K is every seed present there is one subset, and the table adds a 95 % bootstrap interval over
concepts of the winner's cells and of their paired difference from the concept's mean single run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from toyworld_ablation import bootstrap_ci, load_cells  # noqa: E402

METRICS = ("success", "clean", "leakage")


def score_curves(folders: list[Path], method: str) -> dict[tuple[str, int], dict[int, float]]:
    """(concept, seed) -> {step: look score} from each run's TensorBoard `select/score`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves = {}
    for folder in folders:
        for run in sorted((Path(folder) / "runs").glob(f"*-{method}-s*")):
            concept, seed = run.name.rsplit(f"-{method}-s", 1)
            events = EventAccumulator(str(run / "tensorboard"))
            events.Reload()
            curves[(concept, int(seed))] = {e.step: e.value for e in events.Scalars("select/score")}
    return curves


def initial_scores(folders: list[Path], method: str, concepts: list[str], examples: list[Path]) -> dict[str, float]:
    """concept -> the look score of its initializer rows (step 0: the same rows and noise for every seed), scored by
    a run built with a finished run's config.json on the toy model."""
    import tempfile

    from lego_inversion.backbones import load_backbone
    from lego_inversion.concept import load_concept
    from lego_inversion.config import InversionConfig
    from lego_inversion.trainer import InversionRun

    backbone, scores = load_backbone(None), {}
    for i, concept in enumerate(concepts):
        folder = next((e / concept for e in examples if (e / concept / "concept.toml").is_file()), None)
        run = next(r for f in folders for r in sorted((Path(f) / "runs").glob(f"{concept}-{method}-s*")))
        if folder is None:
            raise SystemExit(f"seed_racing: no concept folder {concept!r} under {', '.join(map(str, examples))}")
        config = InversionConfig.from_dict(json.loads((run / "config.json").read_text()))
        with tempfile.TemporaryDirectory() as tmp:
            scores[concept] = InversionRun(load_concept(folder), backbone, config, Path(tmp), alias=str(i)) \
                .selector.best_score
    return scores


def winner(curves: dict, concept: str, seeds: tuple[int, ...], at: int | None) -> int:
    """The seed whose best score up to step `at` (None: the whole run) is highest; ties: the lower seed."""
    def best(seed: int) -> float:
        return max(v for step, v in curves[(concept, seed)].items() if at is None or step <= at)
    return max(seeds, key=lambda s: (best(s), -s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", type=Path, nargs="+", help="toyworld_ablation.py --out folders (runs/, cells/)")
    ap.add_argument("--method", default="lego")
    ap.add_argument("--k", type=int, nargs="+", default=[3, 5], help="seeds per race")
    ap.add_argument("--at", type=int, nargs="+", default=[50, 100, 200], help="race steps N")
    ap.add_argument("--steps", type=int, default=400, help="the runs' steps")
    ap.add_argument("--examples", type=Path, nargs="+", default=[ROOT / "examples", ROOT / "benchmarks" / "heldout"],
                    help="where the concept folders are (for the step-0 score)")
    ap.add_argument("--out", type=Path, help="write results.json here")
    args = ap.parse_args()

    cells, curves = load_cells(args.folders, args.method), score_curves(args.folders, args.method)
    keys = sorted(set(cells) & set(curves))
    concepts, seeds = sorted({c for c, _ in keys}), sorted({s for _, s in keys})
    missing = [(c, s) for c in concepts for s in seeds if (c, s) not in cells or (c, s) not in curves]
    if missing:
        raise SystemExit(f"seed_racing: no cell or score curve for {missing[0]}; finish the ablation first")
    step0 = initial_scores(args.folders, args.method, concepts, args.examples)
    for (concept, seed), curve in curves.items():
        kept = json.loads(next(Path(f) / "runs" / f"{concept}-{args.method}-s{seed}" / "selection.json"
                               for f in args.folders
                               if (Path(f) / "runs" / f"{concept}-{args.method}-s{seed}").is_dir()).read_text())
        if kept["step"] == 0 and abs(kept["score"] - step0[concept]) > 1e-9:  # a run that kept its initializer
            raise SystemExit(f"seed_racing: {concept} s{seed} kept step 0 at {kept['score']}, scored again "
                             f"{step0[concept]}; the step-0 score does not reproduce")
        curve.setdefault(0, step0[concept])
    single = {c: {m: np.mean([cells[(c, s)][m] for s in seeds]) for m in METRICS} for c in concepts}
    rows = [{"k": 1, "at": None, "cost": 1.0, **{m: float(np.mean([single[c][m] for c in concepts]))
                                                 for m in METRICS}}]
    for k in [k for k in args.k if k <= len(seeds)]:
        for at in [*args.at, None]:
            picks = [[cells[(c, winner(curves, c, sub, at))] for c in concepts]
                     for sub in itertools.combinations(seeds, k)]
            n = args.steps if at is None else at
            row = {"k": k, "at": at, "cost": (k * n + args.steps - n) / args.steps}
            row |= {m: float(np.mean([[cell[m] for cell in pick] for pick in picks])) for m in METRICS}
            if k == len(seeds):  # one subset: intervals over concepts
                row["ci"] = {m: bootstrap_ci([cell[m] for cell in picks[0]]) for m in METRICS}
                row["paired"] = {m: bootstrap_ci([cell[m] - single[cell["concept"]][m] for cell in picks[0]])
                                 for m in METRICS}
                row["winners"] = {cell["concept"]: cell["seed"] for cell in picks[0]}
            rows.append(row)

    print(f"{args.method}: {len(concepts)} concepts x seeds {seeds} from {', '.join(map(str, args.folders))}")
    print("| K seeds, raced to step N | cost | success | clean | leakage |")
    print("|---|---|---|---|---|")
    for r in rows:
        name = "1 (one run)" if r["k"] == 1 else f"{r['k']}, " + ("to the end" if r["at"] is None else f"N = {r['at']}")
        vals = []
        for m in METRICS:
            text = f"{r[m]:.3f}"
            if "ci" in r:
                lo, hi = r["ci"][m][1:]
                d, dlo, dhi = r["paired"][m]
                text += f" [{lo:.2f}, {hi:.2f}]; vs one run {d:+.3f} [{dlo:+.2f}, {dhi:+.2f}]"
            vals.append(text)
        print(f"| {name} | {r['cost']:.2f}x | " + " | ".join(vals) + " |")
    if args.out:
        from lego_inversion.atomic import atomic_write_json

        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "results.json", {"method": args.method, "concepts": concepts, "seeds": seeds,
                                                      "rows": rows})


if __name__ == "__main__":
    main()
