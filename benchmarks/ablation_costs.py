"""The cost of one run of each trained method in the toy-world ablation (`toyworld_ablation.py --methods ...`):
the columns users choose a method on (seconds, trained parameters, file size, peak CUDA memory).

    from ablation_costs import probe_costs, cost_table
    costs = probe_costs(Path("examples/melted_cube"), ["ti", "lego", "dreambooth"], args, cell_config)
    print(cost_table(costs))

The ablation trains its cells batched, so per-run seconds come from a probe: one run of each method trained alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lego_inversion.atomic import atomic_write_json

COSTS = ("seconds", "trained_parameters", "file_bytes", "peak_cuda_bytes")


def probe_costs(example: Path, methods: list[str], args, cell_config) -> dict[str, dict]:
    """The cost of one run of each trained method (`baselines.run_cost`): the first seed's run on `example`,
    with the cells' config (`cell_config(method, seed, args)`), trained alone on a freshly loaded model into
    OUT/cost/<method>/ and timed from building the run to its saved results (loading the model is not timed;
    the peak CUDA memory includes it). Cached in OUT/cost/<method>.json with the concept, seed, model and config
    it was measured with; a probe with other settings, or an interrupted one, is redone from scratch (a resumed
    run would time only its rest)."""
    import gc
    import shutil

    import torch

    from lego_inversion import baselines
    from lego_inversion.run_folder import open_run_folder
    from lego_inversion.trainer import build_run, load_training_backbone

    backbone, costs = None, {}
    for method in methods:
        seed = args.seeds[0]
        cfg = cell_config(method, seed, args)
        cache, folder = Path(args.out) / "cost" / f"{method}.json", Path(args.out) / "cost" / method
        key = json.loads(json.dumps({"concept": example.name, "seed": seed, "model": args.model,
                                     "config": cfg.to_dict()}))
        if cache.is_file():
            saved = json.loads(cache.read_text())
            if {k: saved.get(k) for k in key} == key:
                costs[method] = saved["cost"]
                continue
        print(f"cost probe: one {method} run alone ({example.name}, seed {seed})", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        backbone = None  # a fresh model for each probe: no other run's tokens or UNet parts on it
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        backbone = load_training_backbone(args.model, cfg)
        cuda = backbone.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(backbone.device)
            torch.cuda.reset_peak_memory_stats(backbone.device)
        run, start = None, time.perf_counter()
        try:
            run, previous = build_run(example, folder, cfg, backbone)
            open_run_folder(run, previous)
            run.run(progress=False)
            if cuda:
                torch.cuda.synchronize(backbone.device)
            costs[method] = baselines.run_cost(run, time.perf_counter() - start)
        finally:
            if run is not None:
                baselines.detach(run)  # dreambooth / custom-diffusion: the shared UNet back to its base
            del run
        atomic_write_json(cache, key | {"cost": costs[method]})
    return costs


def cost_table(costs: dict[str, dict]) -> str:
    """results.md's "Cost of one run" table."""
    lines = ["Cost of one run (the first concept and seed, trained alone: cost/<method>/; seconds exclude "
             "loading the model; file size: the run's *.safetensors but the checkpoint):", "",
             "| method | seconds | trained parameters | file size (bytes) | peak CUDA memory |",
             "|---|---|---|---|---|"]
    for m, c in costs.items():
        peak = "n/a on CPU" if c["peak_cuda_bytes"] is None else f"{c['peak_cuda_bytes'] / 2**20:.0f} MiB"
        lines.append(f"| {m} | {c['seconds']:.1f} | {c['trained_parameters']:,} | {c['file_bytes']:,} | {peak} |")
    return "\n".join(lines) + "\n"
