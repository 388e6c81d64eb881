"""`run_evaluation`: plan -> generate missing images -> score missing units -> report (§5.3 / Table 2 of Lego).

    from lego_inversion.evaluation import run_evaluation, load_eval_config
    report = run_evaluation(load_eval_config("eval.toml"), "eval_out")

Runs unchanged under `accelerate launch` or `torchrun`: accelerate's `PartialState` shares out generation
batches and scoring batches with `split_between_processes` and synchronises with `wait_for_everyone`; only
the main process writes manifests, merged scores and the report. All input is validated by every process
before any work starts, so bad input fails everywhere at once with one clear line.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from ..atomic import atomic_save_image
from ..errors import UserError
from ..manifest import ImageRecord
from .config import EXCITE_METHOD, EvalConfig
from .plan import (PLAIN_METHODS, ResolvedConcept, check_same_seeds, chosen_metrics, folder_records, plan_records,
                   resolve_concepts, verify_images, write_manifests)
from .scoring import metric_units, run_metric


def generate_missing(records: list[ImageRecord], concepts: list[ResolvedConcept], cfg: EvalConfig, state,
                     device: str, progress: bool = True) -> int:
    """Generate the images of `records` not on disk yet; returns how many this process made.

    Each (concept, method) group loads its backbone (the records' `model`) with that method's learned folder
    (none for the text and attend-excite baselines; attend-excite excites each record's `excite` words) through
    `generation.load_generator`, the one place that applies learned rows.
    """
    from ..generation import load_generator

    by_name = {rc.name: rc for rc in concepts}
    groups: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for r in records:
        groups[(r.concept, r.method)].append(r)
    made = 0
    bs = cfg.generation.batch_size
    # every process must see the same pending list: take it before anyone writes
    pending = {g: [r for r in rs if not r.path.exists()] for g, rs in groups.items()}
    state.wait_for_everyone()
    for (concept, method), todo in pending.items():
        batches = [todo[i:i + bs] for i in range(0, len(todo), bs)]
        with state.split_between_processes(batches) as mine:
            if not mine:
                continue
            folders = [] if method in PLAIN_METHODS else [by_name[concept].entry.methods[method]]
            gen = load_generator(model=todo[0].model, concepts=folders, device=device, dtype=cfg.generation.dtype)
            bar = tqdm(mine, desc=f"generate {concept}/{method} [{state.process_index}]", unit="batch",
                       disable=not progress, position=state.process_index)
            for batch in bar:
                extra = {"excite": [r.extra["excite"] for r in batch]} if method == EXCITE_METHOD else {}
                if folders and cfg.generation.concept_guidance_scale is not None:
                    extra["concept_guidance_scale"] = cfg.generation.concept_guidance_scale
                if folders and cfg.generation.concept_floor is not None:
                    extra["concept_floor"] = cfg.generation.concept_floor
                images = gen.generate([r.prompt for r in batch], [r.seed for r in batch],
                                      num_inference_steps=cfg.generation.num_inference_steps,
                                      guidance_scale=cfg.generation.guidance_scale, batch_size=bs, progress=False,
                                      **extra)
                for r, im in zip(batch, images):
                    atomic_save_image(r.path, im)
                    made += 1
            bar.close()
            del gen
    return made


def _check_models(cfg: EvalConfig, concepts: list[ResolvedConcept]) -> None:
    """Every evaluator model the metrics need must be loadable; checked before anything is generated."""
    from .models import check_model

    if "oracle" in cfg.metrics:
        from .oracle import load_oracle

        load_oracle()  # bundled with the package; a broken install fails here, not after generating
    need = {"vqa": any(rc.questions for rc in concepts), "count": any(rc.count is not None for rc in concepts),
            "clip": True, "dino": any(rc.exemplars for rc in concepts)}
    fields = {"vqa": "vqa", "count": "detector", "clip": "clip", "dino": "dino"}
    for metric in cfg.metrics:
        if need.get(metric):
            check_model(getattr(cfg.models, fields[metric]), f"models.{fields[metric]}")


def _use_cpu(cfg: EvalConfig) -> bool:
    """CPU processes (gloo) when asked (`accelerate launch --cpu`, --device cpu) or when there is no GPU."""
    import os

    import torch

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return True
    if cfg.models.device is not None and cfg.models.device.startswith("cpu"):
        return True
    return not torch.cuda.is_available()


def run_evaluation(cfg: EvalConfig, out_dir: str | Path, *, generate: bool = True, progress: bool = True,
                   state=None) -> dict | None:
    """Run the whole evaluation into `out_dir`; returns the report dict on the main process, else None."""
    from accelerate import PartialState

    from .report import build_report, write_report

    state = state or PartialState(cpu=_use_cpu(cfg))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a folder; choose another output folder")
    device = cfg.models.device or str(state.device)
    concepts = resolve_concepts(cfg)
    cfg = dataclasses.replace(cfg, metrics=chosen_metrics(cfg, concepts))
    planned = plan_records(cfg, concepts, out_dir)
    existing = folder_records(cfg, concepts)
    check_same_seeds(existing)
    _check_models(cfg, concepts)
    if planned and generate:
        generate_missing(planned, concepts, cfg, state, device, progress)
        state.wait_for_everyone()
        if state.is_main_process:
            write_manifests(planned)
        state.wait_for_everyone()
    elif planned:
        missing = [r for r in planned if not r.path.exists()]
        if missing:
            raise UserError(f"{missing[0].path}: not generated yet ({len(missing)} missing); run without "
                            "--no-generate first")
    records = planned + existing
    verify_images(records)
    for metric in cfg.metrics:
        units = metric_units(metric, records, concepts, cfg, out_dir)
        if units:
            run_metric(metric, units, cfg, concepts, out_dir, state, device, progress)
    report = None
    if state.is_main_process:
        report = build_report(cfg, concepts, records, out_dir)
        write_report(report, cfg, concepts, records, out_dir)
        if progress:
            print(f"lego evaluate: report written to {out_dir / 'report.html'}", file=sys.stderr)
    state.wait_for_everyone()
    return report
