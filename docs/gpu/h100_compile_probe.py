"""The one-off probe behind docs/throughput.md's "Call 2": the Lego step eager and with the UNet compiled with CUDA
graphs, in one process, on a real-size SD 1.5 folder (benchmarks/gpu_session.sh builds one at /tmp/sd15).

    PYTHONPATH=src python docs/gpu/h100_compile_probe.py /tmp/sd15 OUT_DIR SECONDS

Each measurement: 3 warm-up steps (compilation and graph recording happen there), then 20 timed `joint_step`s;
one JSON line each in OUT_DIR/probe.jsonl. `benchmarks/trainer_speed.py --compile` measures the same now that
`--compile` uses this mode. (On the H100 the loop itself called `torch.compiler.cudagraph_mark_step_begin()`
before each step; `Backbone.predict` now does.)
"""
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, "tests")
from concept_fixtures import make_concept

from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.loop import joint_step
from lego_inversion.trainer import InversionRun, load_training_backbone

model, out, deadline = sys.argv[1], Path(sys.argv[2]), time.time() + float(sys.argv[3])
spec = load_concept(make_concept(Path(tempfile.mkdtemp()) / "melted"))


def log(rec: dict) -> None:
    print(json.dumps(rec), flush=True)
    with open(out / "probe.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def measure(name: str, method: str, batch: int, runs: int, mode: str | None, steps: int = 20) -> None:
    if time.time() > deadline:
        log({"name": name, "skipped": True})
        return
    torch._dynamo.reset()
    config = InversionConfig(method=method, batch_size=batch, steps=10**6, mixed_precision="bf16", device="cuda")
    backbone = load_training_backbone(model, config)
    if mode:
        backbone._train_unet = torch.compile(backbone.unet, mode=mode)
    group = [InversionRun(spec, backbone, dataclasses.replace(config, seed=i), Path(tempfile.mkdtemp()),
                          alias=str(i) if runs > 1 else "") for i in range(runs)]
    per = sum(2 * batch if r.config.subject_separation else batch for r in group)
    t0 = time.time()
    for _ in range(3):
        joint_step(group)
    torch.cuda.synchronize()
    warm = time.time() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        joint_step(group)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    log({"name": name, "mode": mode, "method": method, "runs": runs, "samples_per_step": per,
         "steps_per_s": steps / dt, "samples_per_s": per * steps / dt, "warmup_s": warm,
         "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20})
    del group, backbone
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


for args in [("ti4-eager", "ti", 4, 1, None), ("ti4-reduce", "ti", 4, 1, "reduce-overhead"),
             ("4runs-reduce", "lego", 2, 4, "reduce-overhead"), ("4runs-eager", "lego", 2, 4, None)]:
    try:
        measure(*args)
    except Exception as e:  # a failed configuration is recorded, and the others still run
        log({"name": args[0], "error": repr(e)[:2000]})
