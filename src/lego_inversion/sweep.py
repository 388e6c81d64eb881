"""Many inversions in one process: the cartesian product of concept folders × methods × seeds, trained with
joint steps on one shared frozen model (one UNet call per step for all runs; `loop.py`).

    lego invert examples/melted_cube examples/frozen_bear --method lego ti --seed 0 1 --out runs/sweep
    # -> runs/sweep/melted_cube-lego-s0/, melted_cube-ti-s0/, ... (each laid out exactly like a single run)
    accelerate launch -m lego_inversion invert ... --out runs/sweep   # each process trains its share of runs

    from lego_inversion.sweep import invert_many
    folders = invert_many(["examples/melted_cube"], ["lego", "ti"], [0, 1], "runs/sweep", InversionConfig())
    folders = invert_cells([(concept_dir, config, run_dir), ...])    # any list of runs, configs may differ

Each run has its own rows, optimizer, random streams, checkpoint and run folder, and learns what it would learn
alone; fine-tuning baselines (dreambooth, custom-diffusion) change the UNet, so they train one at a time after
the joint runs. `--resume` resumes every run from its own checkpoint (runs may stand at different steps); finished runs
are skipped. With one folder, one method and one seed, `invert` (trainer.py) writes OUT itself.

With `--select-by look` and several seeds, `keep_best` then copies each (concept, method)'s best-looking run to
OUT/<concept folder>-<method>-best/: the run whose kept rows scored highest on the look (selection.py; the same
subjects and noise for every seed, so the scores compare), without its checkpoint, plus best.json with every seed's
score. Measured on the toy model: docs/inversion_quality.md (n), (o).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

from . import baselines
from .config import InversionConfig
from .atomic import atomic_dir, atomic_write_json
from .errors import UserError
from .formats import EMBEDS_FILE
from .loop import train_runs
from .run_folder import CHECKPOINT_FILE, SELECTION_FILE, check_inputs, open_run_folder
from .trainer import build_run, load_training_backbone


def run_name(concept_dir: str | Path, method: str, seed: int | str) -> str:
    """The run folder's name under the sweep root: <concept folder>-<method>-s<seed> (`keep_best`'s copy: seed
    "best", <concept folder>-<method>-best)."""
    tail = "best" if seed == "best" else f"s{seed}"
    return f"{Path(concept_dir).resolve().name}-{method}-{tail}"


def plan(concept_dirs: list[str | Path], methods: list[str], seeds: list[int], out_root: str | Path,
         config: InversionConfig) -> list[tuple[Path, InversionConfig, Path]]:
    """(concept folder, config, run folder) for every combination, in a fixed order."""
    cells = [(Path(c), dataclasses.replace(config, method=m, seed=s), Path(out_root) / run_name(c, m, s))
             for c in concept_dirs for m in methods for s in seeds]
    names = [cell[2].name for cell in cells]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserError(f"two runs would share the folder {duplicate!r}: give each concept folder a different name "
                        "and list each method and seed once")
    return cells


def _my_share(cells: list) -> list:
    """Under `accelerate launch` / torchrun (WORLD_SIZE > 1), this process's runs; else all of them."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return cells
    from accelerate import PartialState

    import torch

    state = PartialState(cpu=not torch.cuda.is_available())
    with state.split_between_processes(cells) as mine:
        return list(mine)


def invert_many(concept_dirs: list[str | Path], methods: list[str], seeds: list[int], out_root: str | Path,
                config: InversionConfig | None = None, model: str | None = None, resume: bool = False,
                allow_pickle: bool = False, progress: bool = True) -> list[Path]:
    """Train every (concept, method, seed) run jointly; returns the run folders (of this process's share)."""
    config = config or InversionConfig()
    cells = plan(concept_dirs, methods, seeds, out_root, config)
    folders = invert_cells(_my_share(cells), model=model, resume=resume, allow_pickle=allow_pickle,
                           progress=progress)
    keep_best(cells)
    return folders


def best_seed(scores: dict[int, float]) -> int:
    """The seed with the highest look score; ties go to the lower seed."""
    return max(scores, key=lambda s: (scores[s], -s))


def keep_best(cells: list[tuple[Path, InversionConfig, Path]]) -> list[Path]:
    """For each (concept folder, method) of `cells` with several seeds, all finished and look-selected
    (selection.json), copy the run whose rows scored best (ties: the lower seed) beside them as
    <concept folder>-<method>-best/ with best.json; returns the copies. A group with a run not finished yet
    (another process's share) is left for that process."""
    groups: dict[tuple[Path, str], dict[int, Path]] = {}
    for concept, cfg, out in cells:
        groups.setdefault((Path(concept), cfg.method), {})[cfg.seed] = Path(out)
    written = []
    for (concept, method), runs in groups.items():
        if len(runs) < 2 or not all((f / SELECTION_FILE).is_file() for f in runs.values()):
            continue
        records = {seed: json.loads((f / SELECTION_FILE).read_text()) for seed, f in sorted(runs.items())}
        if any(r.get("select_by") != "look" for r in records.values()):
            continue
        seed = best_seed({s: r["score"] for s, r in records.items()})
        folder = runs[seed]
        best = folder.parent / run_name(concept, method, "best")
        with atomic_dir(best) as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(CHECKPOINT_FILE,
                                                                                          "tensorboard"))
            atomic_write_json(tmp / "best.json", {"chosen": folder.name, "seed": seed,
                                                  "scores": {runs[s].name: r for s, r in records.items()}})
        others = ", ".join(f"s{s} {r['score']:.2f}" for s, r in records.items())
        print(f"lego invert: kept {folder.name} as {best.name} (look score by seed: {others})", file=sys.stderr)
        written.append(best)
    return written


def invert_cells(cells: list[tuple[Path, InversionConfig, Path]], model: str | None = None, resume: bool = False,
                 allow_pickle: bool = False, progress: bool = True) -> list[Path]:
    """Train any list of (concept folder, config, run folder) jointly on one model (configs may differ in
    anything but the model's dtype and device); returns the run folders."""
    for concept, cfg, out in cells:  # every input is checked before the model loads or anything is written
        check_inputs(concept, out, cfg, resume)
    if not cells:
        return []
    base = cells[0][1]
    if base.device is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if torch.cuda.is_available():
            base = dataclasses.replace(base, device=f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    backbone = load_training_backbone(model, base, allow_pickle=allow_pickle)
    joint = [(i, cell) for i, cell in enumerate(cells) if not cell[1].finetunes_unet]
    built = [build_run(concept, out, cfg, backbone, resume=resume, alias=str(i)) for i, (concept, cfg, out) in joint]
    for run, previous in built:
        open_run_folder(run, previous)
    runs = [run for run, _ in built]
    todo = [r for r in runs if not (r.finished and (r.out_dir / EMBEDS_FILE).is_file())]
    if todo:
        train_runs(todo, progress=progress)
    for i, (concept, cfg, out) in enumerate(cells):  # UNet fine-tuning runs: one at a time on the shared model
        if cfg.finetunes_unet:
            run, previous = build_run(concept, out, cfg, backbone, resume=resume, alias=str(i))
            try:
                open_run_folder(run, previous)
                if not (run.finished and (run.out_dir / EMBEDS_FILE).is_file()):
                    train_runs([run], progress=progress)
            finally:
                baselines.detach(run)
    return [out for _, _, out in cells]
