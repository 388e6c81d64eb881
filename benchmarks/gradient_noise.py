"""How much of one training step's gradient on the learned token is signal (docs/inversion_quality.md, (g)).

    PYTHONPATH=src python3 benchmarks/gradient_noise.py --concepts examples/* --methods ti lego --draws 48
    PYTHONPATH=src python3 benchmarks/gradient_noise.py --concepts examples/waving_ball \\
        --runs 'runs/abl400w_ex/runs/{name}-{method}-s0'          # at the end of a trained run instead of at init

For each concept folder and method it draws `--draws` independent training steps (the trainer's own sampling of
images, noise and timesteps, at the toy model's defaults), back-propagates each step's loss (Eq. 3) alone, and
reports for every learned concept row, from the per-step gradients g_k:

    signal share  = |mean g|² / mean |g_k − mean g|²   (|mean g|² less its sampling bias var / K)
    coordinate SNR = median over coordinates of |mean g_i| / std g_i

A share well below 1 means a step's gradient is mostly noise. Adam divides each coordinate by its running RMS,
so on a noise-dominated gradient every coordinate still moves ~lr per step in a random direction: after T steps
the row has walked ~lr·sqrt(T·(1+β1)/(1−β1))·c per coordinate (c ≈ 0.2), which at lr 1e-2 and 400 steps is a
norm of 3–4 in BERT's 384 dimensions, where words have norm 1.1. With `--runs` the rows are read from each run's
checkpoint ({name}: concept folder, {method}), so the same numbers are measured where training ended.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def step_gradients(run, draws: int) -> dict[str, torch.Tensor]:
    """`draws` independent one-step gradients of `run`'s loss on its learned rows: key -> (draws, rows, dim)."""
    from lego_inversion.loop import forward

    grads: dict[str, list[torch.Tensor]] = {k: [] for k in run.params}
    for _ in range(draws):
        terms = forward([run])[0]
        run.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        for k, p in run.params.items():
            grads[k].append(p.grad.detach().reshape(p.shape[0], -1).clone())
    run.optimizer.zero_grad(set_to_none=True)
    return {k: torch.stack(v) for k, v in grads.items()}


def noise_stats(g: torch.Tensor) -> dict[str, float]:
    """Signal share and median coordinate SNR of per-step gradients `g` (draws, dim) of one row."""
    k = g.shape[0]
    mean = g.mean(0)
    var = ((g - mean) ** 2).sum(1).sum() / (k - 1)  # E|g_k - E g|^2, unbiased
    signal = (mean.norm() ** 2 - var / k).clamp_min(0.0)  # |E g|^2: |mean|^2 carries var / K of noise
    snr = (mean.abs() / g.std(0).clamp_min(1e-20)).median()
    return {"signal_share": float(signal / var), "coordinate_snr": float(snr), "grad_norm": float(g.norm(dim=1).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", nargs="+", required=True)
    ap.add_argument("--methods", nargs="+", default=["ti"])
    ap.add_argument("--draws", type=int, default=48)
    ap.add_argument("--runs", default=None, help="trained run folders, e.g. 'runs/x/runs/{name}-{method}-s0'")
    ap.add_argument("--set", nargs="*", default=[], help="InversionConfig overrides, e.g. batch_size=4")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from lego_inversion.config import InversionConfig, parse_overrides
    from lego_inversion.trainer import build_run, load_training_backbone

    overrides = parse_overrides(InversionConfig, args.set, exclude=("method", "seed"))
    backbone = load_training_backbone(None, InversionConfig())
    print("| concept | method | at | row | signal share | coordinate SNR | row norm |\n|---|---|---|---|---|---|---|")
    count = 0
    for concept in [Path(c) for c in args.concepts if (Path(c) / "concept.toml").is_file()]:
        for method in args.methods:
            with tempfile.TemporaryDirectory() as tmp:
                folder, at = Path(tmp) / "run", "init"
                cfg = InversionConfig(**overrides | {"method": method, "seed": 0, "checkpoint_every": 10 ** 6,
                                                     "validation_images": 1})
                if args.runs:  # a copy, so that nothing is written into the trained run; its own settings
                    source = Path(args.runs.format(name=concept.name, method=method))
                    shutil.copytree(source, folder)
                    cfg = InversionConfig.from_dict(json.loads((source / "config.json").read_text()))
                count += 1
                run, _ = build_run(concept, folder, cfg, backbone, resume=bool(args.runs), alias=f"g{count}")
                if args.runs:
                    run.load_checkpoint()
                    at = f"{source.name} (step {run.step})"
                for key, g in step_gradients(run, args.draws).items():
                    rows = run.params[key].detach().reshape(g.shape[1], -1)
                    for r, token in enumerate(run.tokens):
                        if token == run.subject_token:
                            continue
                        s = noise_stats(g[:, r])
                        print(f"| {concept.name} | {method} | {at} | {token} | {s['signal_share']:.3f} | "
                              f"{s['coordinate_snr']:.2f} | {rows[r].norm():.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
