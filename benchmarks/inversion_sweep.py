"""Trainer levers and the inversion-quality diagnosis on the toy world: many settings in one batched process,
oracle readings at checkpoints (docs/inversion_quality.md).

    PYTHONPATH=src python3 benchmarks/inversion_sweep.py --out runs/levers --threads 2 \\
        --setting base: --setting skew:timestep_skew=0.5 --setting captions:caption_variants=4 \\
        --concepts examples/* --seeds 0 --eval-at 100 200 400 800 --steps 800
    PYTHONPATH=src python3 benchmarks/inversion_sweep.py --out runs/upper --described --concepts examples/*

Every (setting, concept, seed) run is trained on one shared toy model with `loop.joint_step` (one UNet call
per step for all runs, each run learning what it would alone). At each `--eval-at` step a run is read by the
oracle on `--images` images per new target subject (transfer: "a photo of a ball that is <melted>") and on its
exemplar's own subject (reconstruction), with the noise seeds the ablation uses; each reading is saved as
evals/<run>-<step>.json as it is made and every run checkpoints there, so an interrupted sweep resumes.
`--described` instead measures the upper bound: the look's neutral description (VARIANT_CAPTIONS) in the
prompt, same targets and seeds, no inversion. Settings are NAME:KEY=VALUE,KEY=VALUE (InversionConfig fields;
`guidance_scale` is a sampling setting). summary.json: per setting, method and step, success / leakage / fidelity /
clean on transfer and success on reconstruction, per concept and overall.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from toyworld_ablation import METRICS, score  # noqa: E402

from lego_inversion.atomic import atomic_write_json  # noqa: E402


def parse_setting(text: str) -> tuple[str, dict, float | None, list[int] | None]:
    """'name:k=v,k=v' -> (name, InversionConfig overrides, guidance scale or None, eval steps or None);
    `guidance_scale=G` and `eval_at=100/200/400` are sweep settings, not InversionConfig fields."""
    from lego_inversion.config import InversionConfig, parse_overrides

    name, _, rest = text.partition(":")
    if not name or "-" in name:
        raise SystemExit(f"--setting {text!r}: use NAME:KEY=VALUE,... with a NAME without '-'")
    items = [x for x in rest.split(",") if x]
    guidance = next((float(x.split("=")[1]) for x in items if x.startswith("guidance_scale=")), None)
    evals = next(([int(v) for v in x.split("=")[1].split("/")] for x in items if x.startswith("eval_at=")), None)
    items = [x for x in items if not x.startswith(("guidance_scale=", "eval_at="))]
    return name, parse_overrides(InversionConfig, items, exclude=("method", "seed")), guidance, evals


def truth_of(concept_dir: Path) -> tuple[dict, dict]:
    data = tomllib.loads((concept_dir / "concept.toml").read_text())
    return data, data["toyworld"]


def eval_prompts(data: dict, truth: dict, concept: str, targets: list[str], n: int) -> list[tuple[str, str, str]]:
    """(kind, target, prompt) for transfer (each new target) and reconstruction (the exemplar's subject)."""
    from lego_inversion.prompts import fill

    out = [("transfer", t, fill(data["prompts"]["with"], {"subject": t, "concept": concept}, "with"))
           for t in targets if t != truth["subject"] for _ in range(n)]
    out += [("recon", truth["subject"], fill(data["prompts"]["with"], {"subject": truth["subject"],
                                                                       "concept": concept}, "with"))
            for _ in range(n)]
    return out


def read(backbone, oracle, jobs: list[tuple[str, list[tuple[str, str, str]], dict, int]], guidance, steps=25):
    """Generate and oracle-score every job's prompts (one batched sampler call per 96 images)."""
    flat = [(j, i, p) for j, (_, items, _, seed) in enumerate(jobs) for i, p in enumerate(items)]
    images = []
    for start in range(0, len(flat), 96):
        chunk = flat[start:start + 96]
        latents = torch.cat([torch.randn(backbone.latent_shape(1, backbone.resolution),
                                         generator=torch.Generator().manual_seed(1000 * jobs[j][3] + i))
                             for j, i, _ in chunk])
        images += backbone.sample([p[2] for _, _, p in chunk], latents, num_inference_steps=steps,
                                  guidance_scale=guidance)
    preds = oracle.predict(images)
    results = [dict() for _ in jobs]
    for (j, _, (kind, target, _)), pred in zip(flat, preds):
        s = score(pred, jobs[j][2], target)
        results[j].setdefault(kind, []).append(s | {"pred": pred})
    return [{k: {m: float(np.mean([s[m] for s in v])) for m in METRICS} | {"n": len(v)}
             for k, v in r.items()} | {"predictions": {k: [s["pred"] for s in v] for k, v in r.items()}}
            for r in results]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--setting", action="append", default=[], help="NAME:KEY=VALUE,... (repeatable)")
    ap.add_argument("--concepts", nargs="+", required=True)
    ap.add_argument("--extra", nargs="*", default=[], metavar="SETTING=DIR",
                    help="SETTING runs on these folders instead of --concepts (e.g. heldout=benchmarks/heldout/x)")
    ap.add_argument("--methods", nargs="+", default=["lego"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval-at", nargs="+", type=int, default=[200, 400])
    ap.add_argument("--images", type=int, default=4, help="images per target subject")
    ap.add_argument("--targets", nargs="+", default=["ball", "star", "bear"])
    ap.add_argument("--guidance", nargs="+", type=float, default=[None], help="sampling guidance scales")
    ap.add_argument("--described", action="store_true", help="the upper bound: described looks, no inversion")
    ap.add_argument("--model", default=None, help="default: the bundled toy model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from lego_inversion.config import InversionConfig
    from lego_inversion.loop import joint_step
    from lego_inversion.toyworld.oracle import Oracle
    from lego_inversion.toyworld.training_data import described_prompt
    from lego_inversion.run_folder import open_run_folder
    from lego_inversion.trainer import build_run, load_training_backbone

    out = Path(args.out)
    oracle = Oracle.load()
    concepts = [Path(c) for c in args.concepts if (Path(c) / "concept.toml").is_file()]
    backbone = load_training_backbone(args.model, InversionConfig())
    if args.described:
        jobs = []
        for c in concepts:
            data, truth = truth_of(c)
            items = [(k, t, described_prompt(t, None, truth["concept"], truth["variant"]) if k == "transfer" else p)
                     for k, t, p in eval_prompts(data, truth, "{concept}", args.targets, args.images)
                     if k == "transfer"]
            jobs += [(c.name, items, truth, s) for s in args.seeds]
        for g in args.guidance:
            res = read(backbone, oracle, jobs, g)
            rows = {f"{name}-s{seed}": r for (name, _, _, seed), r in zip(jobs, res)}
            atomic_write_json(out / f"described-g{g}.json", rows)
            print(g, {k: round(v["transfer"]["success"], 2) for k, v in rows.items()},
                  "mean", round(float(np.mean([v["transfer"]["success"] for v in rows.values()])), 3), flush=True)
        return 0
    settings = [parse_setting(s) for s in args.setting] or [("base", {}, None, None)]
    runs = []
    extra = [(k, Path(v)) for k, _, v in (x.partition("=") for x in args.extra)]
    for name, overrides, guidance, evals in settings:
        for c in [d for k, d in extra if k == name] or concepts:
            for m in args.methods:
                for seed in args.seeds:
                    cfg = InversionConfig(**({"steps": args.steps} | overrides | {"method": m, "seed": seed,
                                                                                 "checkpoint_every": 10 ** 6,
                                                                                 "validation_images": 1}))
                    folder = out / "runs" / f"{name}-{c.name}-{m}-s{seed}"
                    run, previous = build_run(c, folder, cfg, backbone, resume=True, alias=str(len(runs)))
                    open_run_folder(run, previous)
                    runs.append((run, evals or args.eval_at, c, seed, guidance))
    print(f"{len(runs)} runs", flush=True)

    def evaluate_due() -> None:
        due = []
        for run, evals, c, seed, guidance in runs:
            if run.step in evals or (run.finished and run.step == run.config.steps):
                for g in ([guidance] if guidance is not None else args.guidance):
                    f = out / "evals" / f"{run.out_dir.name}-g{g}-{run.step}.json"
                    if not f.is_file():
                        due.append((run, f, c, seed, g))
        for g in {d[4] for d in due}:
            batch = [d for d in due if d[4] == g]
            jobs = []
            for run, _, c, seed, _ in batch:
                data, truth = truth_of(c)
                concept = " ".join(run.internal[t] for t in run.spec.tokens)
                jobs.append((c.name, eval_prompts(data, truth, concept, args.targets, args.images), truth, seed))
            for (run, f, c, seed, _), res in zip(batch, read(backbone, oracle, jobs, g)):
                run.save_checkpoint()
                atomic_write_json(f, res | {"step": run.step, "concept": c.name, "seed": seed, "guidance": g,
                                            "method": run.config.method})
                print(f"{f.stem}: " + " ".join(f"{k}={res['transfer'][k]:.2f}" for k in METRICS)
                      + f" recon={res['recon']['success']:.2f}", flush=True)

    evaluate_due()
    while True:
        active = [r for r, *_ in runs if not r.finished]
        if not active:
            break
        joint_step(active)
        if any(r.step in evals or r.finished for r, evals, *_ in runs if r in active):
            evaluate_due()
    for run, *_ in runs:
        run.save_checkpoint()
        run.save_results()
    summarize(out)
    return 0


def method_of(stem: str, record: dict) -> str:
    """The method of an eval file: recorded in it, or read from its name
    `<setting>-<concept>-<method>-s<seed>-g<guidance>-<step>` (methods may contain '-')."""
    if "method" in record:
        return record["method"]
    head = f"{stem.split('-')[0]}-{record['concept']}-"
    tail = f"-s{record['seed']}-g{record['guidance']}-{record['step']}"
    return stem[len(head):-len(tail)]


def summarize(out: Path) -> dict:
    """summary.json: mean transfer metrics and reconstruction success per (setting, method, step, guidance)."""
    groups: dict = {}
    for f in sorted((out / "evals").glob("*.json")):
        r = json.loads(f.read_text())
        key = f"{f.stem.split('-')[0]}|{method_of(f.stem, r)}|{r['step']}|{r['guidance']}"
        groups.setdefault(key, []).append(r)
    summary = {}
    for key, rs in sorted(groups.items()):
        summary[key] = {m: float(np.mean([r["transfer"][m] for r in rs])) for m in METRICS} | {
            "recon_success": float(np.mean([r["recon"]["success"] for r in rs])), "cells": len(rs),
            "per_concept": {f"{r['concept']}-s{r['seed']}": [round(r["transfer"]["success"], 2),
                                                             round(r["transfer"]["leakage"], 2),
                                                             round(r["recon"]["success"], 2)] for r in rs}}
    atomic_write_json(out / "summary.json", summary)
    for key, v in summary.items():
        print(key, " ".join(f"{m}={v[m]:.2f}" for m in METRICS), f"recon={v['recon_success']:.2f}")
    return summary

if __name__ == "__main__":
    sys.exit(main())
