"""Lego's ablation (Fig. 9, Table 2, §5.5) measured on the toy world, scored by the oracle.

    PYTHONPATH=src python3 benchmarks/toyworld_ablation.py --out runs/ablation --seeds 0 1 2 --jobs 2  # 2 CPU cores
    PYTHONPATH=src python3 benchmarks/toyworld_ablation.py --out runs/abl_smoke --concepts melted_cube \
        --methods ti lego --seeds 0 --steps 20 --images 2 --targets ball            # smoke test, ~3 min
    PYTHONPATH=src python3 benchmarks/toyworld_ablation.py --out runs/abl_base --methods text attend-excite \
        ti lego reversion dreambooth custom-diffusion      # with the paper's baselines (opt-in) [--no-cost]

For every example concept K (examples/*, personalized variants that no caption names), method M in
{ti, cl-only, ss-only, lego} (+ the "text" baseline: the concept's words, no inversion; opt-in: the paper's
baselines reversion, dreambooth, custom-diffusion, and "attend-excite": the text baseline's prompt generated
with Attend-and-Excite (Chefer et al. 2023) on its words that name the target subject and the concept, chosen
by `lego evaluate`'s rule; text and attend-excite learn nothing, so they run the first seed only) and seed S,
it inverts the concept (all missing cells' inversions trained together, one UNet call per step:
`lego_inversion.sweep.invert_cells`; each run learns what it would alone), generates `--images` images onto
each new target subject ("a photo of a ball that is <melted>"), and lets the oracle read them:
    concept success  = the oracle sees the *personalized* variant of the concept (and the right count)
    subject leakage  = the exemplar's appearance (checkered) or class shows up on the target
    target fidelity  = the oracle sees the target subject class
    clean hit        = all three at once: the personalized concept on the target, no leakage (what a person
                       asked "which image applies the concept to the new subject?" would prefer)
Each (K, M, S) cell is one rate; a method's score is the mean over cells with a 95% bootstrap CI over cells,
and pairwise win rates compare methods cell by cell on clean hits (the automatic stand-in for the paper's
human preference study) and on concept success (ties count 1/2). Results: results.json, results.md, and
grids/<method>.png (one row per concept: the exemplar's `with/` images, then the first seed's images on each
target). Every cell is saved as it finishes (cells/*.json, grids/cells/*.png), so an interrupted run continues
where it stopped.

Cost of one run (results.json `summary.costs.<method>`, the "Cost of one run" table; skip with --no-cost): the
cells are trained batched, so for each trained method one run (the first concept, the first seed, the cells'
config) is trained alone into cost/<method>/ and measured by `lego_inversion.baselines.run_cost`: wall seconds
(building the run, training, validation grids, saving; not loading the model), trained parameters, bytes of
its saved results (the run folder's *.safetensors but the checkpoint) and peak CUDA memory (the model
included; n/a on CPU: a process's resident high-water mark cannot be attributed to one run). Saved as
cost/<method>.json and reused while the concept and config are the same.

With `--jobs N` the script runs again in N worker processes, each with a share of the cells (every method's cells
dealt out in turn) and --threads // N torch threads; each trains its share's inversions batched, then draws and
scores its cells, and the parent writes the results from all of them. A worker's batch holds other runs than one
process's would, so rows agree to float rounding, not bit for bit (docs/throughput.md); the time of a full ablation
with --jobs 2 is in docs/toyworld_benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lego_inversion.atomic import atomic_write_json, atomic_write_text  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from ablation_costs import COSTS, cost_table, probe_costs  # noqa: E402
from ablation_grids import GRID_PER_TARGET, save_cell_grid, save_method_grids  # noqa: E402,F401
from ablation_workers import run_workers, share  # noqa: E402

METHODS = ("ti", "cl-only", "ss-only", "lego")
BASELINES = ("reversion", "dreambooth", "custom-diffusion")  # the paper's baselines (§5.1–5.2): opt-in, costlier
EXCITE = "attend-excite"  # the paper's generation-time baseline (Chefer et al. 2023): opt-in, no inversion
PLAIN = ("text", EXCITE)  # methods that learn nothing: the first seed only, no training, no cost probe
METRICS = ("success", "leakage", "fidelity", "clean")


def parse_overrides(items: list[str]) -> dict:
    """["learning_rate=1e-2", "subject_from_with=false"] -> typed InversionConfig keyword arguments."""
    from lego_inversion.config import InversionConfig, parse_overrides as parse

    return parse(InversionConfig, items, exclude=("method", "steps", "seed"))


def shows_look(pred: dict, truth: dict) -> bool:
    """The oracle sees the exemplar's personalized look: its concept and variant (and for a count, its number)."""
    ok = pred["concept"] == truth["concept"] and pred["variant"] == truth["variant"]
    return ok and (truth["concept"] != "count" or pred["count"] == truth["count"])


def score(pred: dict, truth: dict, target: str) -> dict[str, float]:
    """Oracle reading of one generated image -> the three 0/1 metrics."""
    ok = shows_look(pred, truth)
    leak = pred["appearance"] == truth["appearance"] or pred["subject"] == truth["subject"]
    fidelity = pred["subject"] == target
    return {"success": float(ok), "leakage": float(leak), "fidelity": float(fidelity),
            "clean": float(ok and fidelity and not leak)}


def cell_targets(truth: dict, args) -> list[str]:
    """The target subject of each generated image of a cell, in generation order."""
    return [t for t in args.targets if t != truth["subject"] for _ in range(args.images)]


def rescore(cell: dict, truth: dict, targets: list[str]) -> dict:
    """A cell's metrics recomputed from its saved oracle predictions (cells saved before a metric existed)."""
    scores = [score(p, truth, t) for p, t in zip(cell["predictions"], targets, strict=True)]
    return cell | {m: float(np.mean([s[m] for s in scores])) for m in METRICS}


def load_cells(folders: list[Path], method: str) -> dict[tuple[str, int], dict]:
    """(concept, seed) -> saved cell of `method`, from the cells/ of one or more ablation output folders."""
    cells = {}
    for folder in folders:
        for f in sorted((Path(folder) / "cells").glob(f"*-{method}-*.json")):
            c = json.loads(f.read_text())
            if c["method"] == method:
                cells[(c["concept"], c["seed"])] = c
    return cells


def bootstrap_ci(values, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of `values`."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def win_rate(a: dict, b: dict) -> float:
    """Fraction of shared cells where `a` beats `b` on success (ties 1/2)."""
    keys = sorted(set(a) & set(b))
    return float(np.mean([1.0 if a[k] > b[k] else 0.5 if a[k] == b[k] else 0.0 for k in keys]))


def with_prompts(template: str, targets: list[str], concept: str, where: str) -> list[str]:
    """The example's `with` prompt for each target subject, its {concept} filled with the learned tokens."""
    from lego_inversion.prompts import check_template, fill

    check_template(template, {"subject", "concept"}, where, required=("subject",))
    return [fill(template, {"subject": t, "concept": concept}, where) for t in targets]


def run_dir(example: Path, method: str, seed: int, args) -> Path:
    from lego_inversion.sweep import run_name

    return Path(args.out) / "runs" / run_name(example, method, seed)


def cell_config(method: str, seed: int, args):
    from lego_inversion.config import InversionConfig

    steps = {"steps": args.steps} if args.steps is not None else {}
    # one small validation grid per run (the look judge has its own `select_steps`); --set may override it
    return InversionConfig(**({"validation_images": 1, "validation_steps": 5} | args.set | steps
                              | {"method": method, "seed": seed}))


def train_missing(jobs: list[tuple[Path, str, int]], args) -> None:
    """Invert every job (example, method, seed) whose cell is not saved yet, all runs in one batched loop;
    runs resume from their checkpoints."""
    from lego_inversion.sweep import invert_cells

    cells = [(ex, cell_config(m, s, args), run_dir(ex, m, s, args)) for ex, m, s in jobs if m
             not in PLAIN and not (Path(args.out) / "cells" / f"{ex.name}-{m}-{s}.json").is_file()]
    if cells:
        print(f"training {len(cells)} inversions together", flush=True)
        invert_cells(cells, model=args.model, resume=True, progress=False)


def run_cell(example: Path, method: str, seed: int, args, oracle) -> dict:
    from lego_inversion.generation import load_generator
    from lego_inversion.toyworld.training_data import generic_prompt

    data = tomllib.loads((example / "concept.toml").read_text())
    truth = data["toyworld"]
    tgt = cell_targets(truth, args)
    excite = {}
    if method in PLAIN:
        gen = load_generator(args.model, [])
        prompts = [generic_prompt(t, None, truth["concept"], truth["count"]) for t in tgt]
        if method == EXCITE:
            excite = {"excite": [excite_words(truth, t) for t in tgt]}
    else:
        from lego_inversion.trainer import invert

        run = run_dir(example, method, seed, args)
        invert(example, run, cell_config(method, seed, args), model=args.model, resume=run.exists(), progress=False)
        gen = load_generator(args.model, [run])
        prompts = with_prompts(data["prompts"]["with"], tgt, gen.expand_prompt("{concept}"),
                               where=f"{example / 'concept.toml'}: prompts.with")
    guide = {} if method in PLAIN else {"concept_guidance_scale": args.concept_guidance,
                                        "concept_floor": args.concept_floor}
    images, metrics, preds = read_images(gen, prompts, tgt, truth, seed, args, oracle, **excite, **guide)
    save_cell_grid(Path(args.out) / "grids" / "cells" / f"{example.name}-{method}-{seed}.png", example, images,
                   per_target=args.images)
    return {"concept": example.name, "method": method, "seed": seed, "prompts": sorted(set(prompts)), **metrics,
            "n_images": len(preds), "predictions": preds} \
        | ({"excite": sorted({w for ws in excite["excite"] for w in ws})} if excite else {})


def read_images(gen, prompts: list[str], targets: list[str], truth: dict, seed: int, args, oracle, **kwargs):
    """Generate a cell's images (image i from noise seed 1000·seed + i, the same for every method) and let the
    oracle read them -> (images, mean metrics, predictions)."""
    noise = [1000 * seed + i for i in range(len(prompts))]
    images = gen.generate(prompts, noise, num_inference_steps=args.sample_steps, batch_size=16, progress=False,
                          guidance_scale=args.guidance, **kwargs)
    preds = oracle.predict(images)
    scores = [score(p, truth, t) for p, t in zip(preds, targets)]
    return images, {m: float(np.mean([s[m] for s in scores])) for m in METRICS}, preds


def excite_words(truth: dict, target: str) -> list[str]:
    """The words Attend-and-Excite excites in the text baseline's prompt for `target`: those that name the
    target subject and the concept, by `lego evaluate`'s rule (`ResolvedConcept.excite_words`: the content words
    of the target and of the concept's description). The description is what the prompt adds to the caption
    opening "a photo of": "ball that is melted" -> ball, melted; "three balls" -> three, balls."""
    from lego_inversion.evaluation.plan import ResolvedConcept
    from lego_inversion.toyworld.render import PLURALS
    from lego_inversion.toyworld.training_data import BASE_TEMPLATE, generic_prompt

    words = generic_prompt(target, None, truth["concept"], truth["count"]).split()
    opening = BASE_TEMPLATE.split()
    while words and opening and words[0] == opening[0]:
        words, opening = words[1:], opening[1:]
    subject = PLURALS[target] if truth["concept"] == "count" else target  # as the prompt names it
    described = ResolvedConcept(entry=None, methods=[EXCITE], targets=[target], description=" ".join(words),
                                questions=[], count=None, exemplars=[])
    return described.excite_words(subject)


def per_concept_rows(cells: list[dict], key: str, columns: list[str], metrics, label=str, order=str) -> list[str]:
    """A markdown table, one row per concept (sorted by `order`, named by `label`) and one column per `cell[key]`
    value, each entry "m1/m2/…": the metrics' means over seeds."""
    rows = ["| concept | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for k in sorted({c["concept"] for c in cells}, key=order):
        row = []
        for col in columns:
            cs = [c for c in cells if c["concept"] == k and c[key] == col]
            row.append("/".join(f"{np.mean([c[m] for c in cs]):.2f}" for m in metrics) if cs else "-")
        rows.append(f"| {label(k)} | " + " | ".join(row) + " |")
    return rows


def summarize(cells: list[dict], methods: list[str], costs: dict[str, dict] | None = None) -> tuple[dict, str]:
    summary = {"methods": {}, "win_rates": {}}
    if costs:
        summary["costs"] = {m: {k: c[k] for k in COSTS} for m, c in costs.items()}
    by_method = {m: {(c["concept"], c["seed"]): c for c in cells if c["method"] == m} for m in methods}
    lines = ["| method | concept success | subject leakage | target fidelity | clean hit | cells |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        cs = list(by_method[m].values())
        if not cs:
            continue
        row = {k: bootstrap_ci([c[k] for c in cs]) for k in METRICS}
        summary["methods"][m] = row | {"cells": len(cs)}
        lines.append(f"| {m} | " + " | ".join(f"{row[k][0]:.2f} [{row[k][1]:.2f}, {row[k][2]:.2f}]"
                                            for k in METRICS) + f" | {len(cs)} |")
    for metric, title in (("clean", "a clean hit (personalized concept on the target subject, no leakage)"),
                          ("success", "concept success")):
        lines += ["", f"Pairwise win rate on {title} (row beats column, cell by cell; ties 1/2):", "",
                  "| | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for a in methods:
            sa = {k: c[metric] for k, c in by_method[a].items()}
            row_ = []
            for b in methods:
                sb = {k: c[metric] for k, c in by_method[b].items()}
                w = win_rate(sa, sb) if a != b and set(sa) & set(sb) else float("nan")
                summary["win_rates"].setdefault(metric, {})[f"{a}>{b}"] = w
                row_.append("-" if a == b else f"{w:.2f}")
            lines.append(f"| {a} | " + " | ".join(row_) + " |")
    lines += ["", "Per concept (success / leakage / fidelity / clean hit, mean over seeds):", "",
              *per_concept_rows(cells, "method", methods, METRICS)]
    table = "\n".join(lines) + "\n"
    return summary, table + ("\n" + cost_table(summary["costs"]) if costs else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--examples", default=str(ROOT / "examples"))
    ap.add_argument("--concepts", nargs="*", help="example folder names (default: all with a [toyworld] table)")
    ap.add_argument("--methods", nargs="*", default=["text", *METHODS],
                    help=f"text, {', '.join(METHODS)} (default), or the baselines {', '.join(BASELINES)}, {EXCITE}")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="inversion steps per run (default: the model's)")
    ap.add_argument("--guidance", type=float, default=None, help="sampling guidance scale (default: the model's)")
    ap.add_argument("--concept-floor", type=float, default=None,
                    help="learned methods: leave the concept tokens out below this fraction of the noise schedule "
                         "(lego generate --concept-floor; default: the model's)")
    ap.add_argument("--concept-guidance", type=float, default=None,
                    help="learned methods: concept guidance scale (lego generate --concept-guidance-scale; default: "
                         "the model's)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--images", type=int, default=6, help="images per target subject")
    ap.add_argument("--targets", nargs="*", default=["ball", "star", "bear"])
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--model", default=None, help="default: the bundled toy model")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="InversionConfig overrides for every run, e.g. learning_rate=1e-2 context_weight=0.1")
    ap.add_argument("--no-cost", action="store_true",
                    help="skip the cost probe (one run of each trained method trained alone, timed)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="worker processes sharing the inversions and cells, --threads split between them")
    ap.add_argument("--share", default=None, help=argparse.SUPPRESS)  # "i/N": a --jobs worker's part
    args = ap.parse_args(argv)
    try:
        args.set = parse_overrides(args.set)
    except ValueError as exc:
        print(f"toyworld_ablation: error: --set: {exc}", file=sys.stderr)
        return 2
    import torch

    from lego_inversion.errors import UserError
    from lego_inversion.toyworld.oracle import Oracle

    torch.set_num_threads(args.threads)

    bad = [m for m in args.methods if m not in (*PLAIN, *METHODS, *BASELINES)]
    if bad or (args.steps is not None and args.steps < 1) or args.images < 1 or not args.seeds or args.jobs < 1:
        print(f"toyworld_ablation: error: bad --methods {bad} or --steps/--images/--seeds/--jobs", file=sys.stderr)
        return 2
    examples = [p for p in sorted(Path(args.examples).iterdir()) if (p / "concept.toml").is_file()
                and (not args.concepts or p.name in args.concepts)]
    examples = [p for p in examples if "toyworld" in tomllib.loads((p / "concept.toml").read_text())]
    if not examples:
        print(f"toyworld_ablation: error: no toy-world examples in {args.examples}", file=sys.stderr)
        return 2
    for ex in examples:
        if not cell_targets(tomllib.loads((ex / "concept.toml").read_text())["toyworld"], args):
            print(f"toyworld_ablation: error: --targets {' '.join(args.targets)}: {ex.name}'s exemplar is the only "
                  "target, so it has no new subject; add another target", file=sys.stderr)
            return 2
    out = Path(args.out)
    oracle, cells, t0 = Oracle.load(), [], time.time()
    jobs = [(e, m, s) for e in examples for m in args.methods for s in (args.seeds if m not in PLAIN else
                                                                         args.seeds[:1])]
    costs = {}
    try:
        if not args.no_cost:
            costs = probe_costs(examples[0], [m for m in dict.fromkeys(args.methods) if m not in PLAIN], args,
                                    cell_config)
        if args.jobs > 1:
            code = run_workers(Path(__file__).resolve(), args, list(sys.argv[1:] if argv is None else argv))
            if code:
                print(f"toyworld_ablation: error: a worker of --jobs {args.jobs} stopped (exit code {code}); run the "
                      "same command again to resume", file=sys.stderr)
                return code
        if args.share:
            part, parts = map(int, args.share.split("/"))
            jobs = share(jobs, part, parts)
        train_missing(jobs, args)
        for i, (ex, m, s) in enumerate(jobs):
            f = out / "cells" / f"{ex.name}-{m}-{s}.json"
            if f.is_file():
                cell = json.loads(f.read_text())
                if any(k not in cell for k in METRICS):
                    truth = tomllib.loads((ex / "concept.toml").read_text())["toyworld"]
                    cell = rescore(cell, truth, cell_targets(truth, args))
                    atomic_write_json(f, cell)
                cells.append(cell)
                continue
            cell = run_cell(ex, m, s, args, oracle)
            atomic_write_json(f, cell)
            cells.append(cell)
            print(f"[{i + 1}/{len(jobs)}{' of share ' + args.share if args.share else ''} {time.time() - t0:.0f}s] "
                  f"{ex.name} {m} seed {s}: "
                  + " ".join(f"{k}={cell[k]:.2f}" for k in METRICS), flush=True)
    except UserError as exc:
        print(f"toyworld_ablation: error: {exc}", file=sys.stderr)
        return 2
    if args.share:  # a worker: the parent writes the results
        return 0
    summary, table = summarize(cells, args.methods, costs)
    save_method_grids(out, cells, args.methods)
    cmd = "PYTHONPATH=src python3 benchmarks/toyworld_ablation.py " + " ".join(argv or sys.argv[1:])
    atomic_write_json(out / "results.json", {"summary": summary, "args": vars(args), "command": cmd,
                                             "wall_time_min": round((time.time() - t0) / 60, 1)})
    atomic_write_text(out / "results.md", f"Command: `{cmd}`\n\n{table}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
