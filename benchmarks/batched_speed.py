"""Batched inversion against the same runs one after another, in one invocation (the throughput issue's CPU
target: 8 toy-world runs, >= 3x faster in wall-clock).

    python benchmarks/batched_speed.py --steps 50 --out runs/bench_batched [--json results.json]

Both sides train the same 8 runs (examples/* concepts x methods x seeds, the trainer's defaults otherwise) on
the embedded toy model; "sequential" calls `invert` once per run, as 8 `lego invert` commands would (model load
included, Python start-up not), "batched" calls `invert_many` once. Validation grids are made by both at the
end (1 image, 5 sampler steps). Reports wall-clock seconds, samples per second and the ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lego_inversion.config import InversionConfig  # noqa: E402
from lego_inversion.sweep import invert_many, plan  # noqa: E402
from lego_inversion.trainer import invert  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--concepts", nargs="+", default=["melted_cube", "frozen_bear", "three_stars", "sleeping_heart"])
    ap.add_argument("--methods", nargs="+", default=["lego", "ti"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_batched"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folders = [ROOT / "examples" / c for c in args.concepts]
    config = InversionConfig(steps=args.steps, checkpoint_every=args.steps, validation_images=1, validation_steps=5)
    shutil.rmtree(args.out, ignore_errors=True)
    cells = plan(folders, args.methods, args.seeds, args.out / "sequential", config)
    start = time.perf_counter()
    for concept, cfg, out in cells:
        invert(concept, out, cfg, progress=False)
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    invert_many(folders, args.methods, args.seeds, args.out / "batched", config, progress=False)
    batched = time.perf_counter() - start
    samples = sum(2 * cfg.batch_size if cfg.subject_separation else cfg.batch_size for _, cfg, _ in cells)
    result = {"runs": len(cells), "steps": args.steps, "threads": torch.get_num_threads(),
              "sequential_s": round(sequential, 2), "batched_s": round(batched, 2),
              "sequential_samples_per_s": round(samples * args.steps / sequential, 1),
              "batched_samples_per_s": round(samples * args.steps / batched, 1),
              "speedup": round(sequential / batched, 2)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
