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

With `--race N` (`race_steps`), every (concept, method)'s seeds first train jointly to step N; then only the seed whose
look score so far is best (ties: the lower seed) trains on, and the others stop there with their checkpoint.
OUT/<concept folder>-<method>-race.json records each race's scores and winner before the winner goes on, so
`--resume` continues the same race. It is opt-in: on the toy model, 5 seeds raced to step 100 cost 2× one run and, on
fresh seeds, gained −0.00 / +0.03 concept success over it (docs/inversion_quality.md (t), (u)).

With `--average-seeds`, `keep_average` writes each (concept, method)'s rows averaged over its seeds to
OUT/<concept folder>-<method>-mean/ (averaging.py; docs/inversion_quality.md (v)); with `--average-seeds K`, over the
K seeds whose look scores are best.

With `--select-by look` and several seeds, `keep_best` then copies each (concept, method)'s best-looking run to
OUT/<concept folder>-<method>-best/: the run whose kept rows scored highest on the look (selection.py; the same
subjects and noise for every seed, so the scores compare), or the race's winner, without its checkpoint, plus
best.json with every seed's score (and the race's record). Measured on the toy model:
docs/inversion_quality.md (n), (o).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

from . import baselines
from .config import InversionConfig
from .atomic import atomic_dir, atomic_write_json
from .averaging import average_runs
from .documents import read_document
from .errors import UserError
from .formats import EMBEDS_FILE
from .loop import train_runs
from .run_folder import CHECKPOINT_FILE, SELECTION_FILE, check_inputs, open_run_folder
from .selection import LookSelector
from .trainer import build_run, load_training_backbone


def run_name(concept_dir: str | Path, method: str, seed: int | str) -> str:
    """The run folder's name under the sweep root: <concept folder>-<method>-s<seed> (`keep_best`'s copy: seed
    "best", <concept folder>-<method>-best; `keep_average`'s: seed "mean")."""
    tail = seed if seed in ("best", "mean") else f"s{seed}"
    return f"{Path(concept_dir).resolve().name}-{method}-{tail}"


def race_file(run_dir: Path, concept_dir: str | Path, method: str) -> Path:
    """The record of the race among a (concept folder, method)'s seeds, beside their run folders."""
    return Path(run_dir).parent / f"{Path(concept_dir).resolve().name}-{method}-race.json"


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

    # a race needs all of its seeds in one process
    races: dict[Path, list] = {}
    for concept, cfg, out in cells:
        races.setdefault(race_file(out, concept, cfg.method) if cfg.race_steps else out, []).append((concept, cfg, out))
    state = PartialState(cpu=not torch.cuda.is_available())
    with state.split_between_processes(list(races.values())) as mine:
        return [cell for unit in mine for cell in unit]


def invert_many(concept_dirs: list[str | Path], methods: list[str], seeds: list[int], out_root: str | Path,
                config: InversionConfig | None = None, model: str | None = None, resume: bool = False,
                allow_pickle: bool = False, progress: bool = True, average: bool = False, top: int = 0) -> list[Path]:
    """Train every (concept, method, seed) run jointly; returns the run folders (of this process's share). With
    `average`, also write each (concept, method)'s rows averaged over its seeds, or over its `top` best-looking
    seeds (`keep_average`)."""
    config = config or InversionConfig()
    cells = plan(concept_dirs, methods, seeds, out_root, config)
    folders = invert_cells(_my_share(cells), model=model, resume=resume, allow_pickle=allow_pickle,
                           progress=progress)
    keep_best(cells)
    if average:
        keep_average(cells, top)
    return folders


def best_seeds(scores: dict[int, float], k: int) -> list[int]:
    """The k seeds with the highest look scores, best first; ties go to the lower seed."""
    return sorted(scores, key=lambda s: (-scores[s], s))[:k]


def best_seed(scores: dict[int, float]) -> int:
    """The seed with the highest look score; ties go to the lower seed."""
    return best_seeds(scores, 1)[0]


def look_records(runs: dict[int, Path]) -> dict[int, dict] | None:
    """{seed: its selection.json} when every run of `runs` kept its rows by their look score, else None."""
    if not all((f / SELECTION_FILE).is_file() for f in runs.values()):
        return None
    records = {seed: read_document(f / SELECTION_FILE, fix="re-run `lego invert` on it")
               for seed, f in sorted(runs.items())}
    return records if all(r.get("select_by") == "look" for r in records.values()) else None


def _seed_groups(cells: list[tuple[Path, InversionConfig, Path]]) -> dict[tuple[Path, str], dict[int, Path]]:
    """(concept folder, method) -> {seed: run folder}."""
    groups: dict[tuple[Path, str], dict[int, Path]] = {}
    for concept, cfg, out in cells:
        groups.setdefault((Path(concept), cfg.method), {})[cfg.seed] = Path(out)
    return groups


def keep_best(cells: list[tuple[Path, InversionConfig, Path]]) -> list[Path]:
    """For each (concept folder, method) of `cells` with several seeds, all finished and look-selected
    (selection.json), or with a race whose winner has finished, copy the run whose rows scored best (ties: the lower
    seed), or the winner, beside them as <concept folder>-<method>-best/ with best.json; returns the copies. A group
    with a run not finished yet (another process's share) is left for that process."""
    written = []
    for (concept, method), runs in _seed_groups(cells).items():
        record = race_file(next(iter(runs.values())), concept, method)
        race = read_document(record, fix="delete it to race again") if record.is_file() else None
        if race is not None:
            if race.get("seed") not in runs:
                continue
            runs = {race["seed"]: runs[race["seed"]]}  # the only run of the race that trained to the end
        records = look_records(runs) if len(runs) > 1 or race is not None else None
        if records is None:
            continue
        seed = best_seed({s: r["score"] for s, r in records.items()})
        folder = runs[seed]
        best = folder.parent / run_name(concept, method, "best")
        with atomic_dir(best) as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(CHECKPOINT_FILE,
                                                                                          "tensorboard"))
            atomic_write_json(tmp / "best.json", {"chosen": folder.name, "seed": seed,
                                                  "scores": {runs[s].name: r for s, r in records.items()}}
                              | ({"race": race} if race else {}))
        if race:
            why = f"won the race at step {race['at_step']}, then scored {records[seed]['score']:.2f}"
        else:
            why = "look score by seed: " + ", ".join(f"s{s} {r['score']:.2f}" for s, r in records.items())
        print(f"lego invert: kept {folder.name} as {best.name} ({why})", file=sys.stderr)
        written.append(best)
    return written


def keep_average(cells: list[tuple[Path, InversionConfig, Path]], top: int = 0) -> list[Path]:
    """For each (concept folder, method) of `cells` with several seeds, all finished, write their rows' mean as
    <concept folder>-<method>-mean/ (averaging.py); with `top`, the mean of the `top` seeds whose kept look scores
    are best (ties: the lower seeds; docs/inversion_quality.md (v)). Returns the folders. Methods that fine-tune the
    UNet are left out, and so is a group with a run not finished yet (another process's share, or a race's loser)."""
    written = []
    for (concept, method), runs in _seed_groups([c for c in cells if not c[1].finetunes_unet]).items():
        folders = [runs[s] for s in sorted(runs)]
        if len(folders) < 2 or not all((f / EMBEDS_FILE).is_file() for f in folders):
            continue
        why = ""
        if top:
            records = look_records(runs)
            if records is None:
                raise UserError(f"{folders[0]}: --average-seeds {top} ranks the seeds by their look score, and these "
                                "runs were not scored by look; train with --select-by look, or average every seed")
            scores = {s: r["score"] for s, r in records.items()}
            folders = [runs[s] for s in sorted(best_seeds(scores, top))]
            why = " (the best look scores: " + ", ".join(f"s{s} {scores[s]:.2f}" for s in sorted(scores)) + ")"
        mean = average_runs(folders, folders[0].parent / run_name(concept, method, "mean"))
        print(f"lego invert: averaged the rows of {', '.join(f.name for f in folders)} into {mean.name}{why}",
              file=sys.stderr)
        written.append(mean)
    return written


def race_groups(runs: list) -> dict[Path, list]:
    """The runs with `race_steps`, by race (their race_file); a race that cannot be run is a UserError, raised
    before any run folder is written."""
    races: dict[Path, list] = {}
    for run in runs:
        cfg, n = run.config, run.config.race_steps
        if not n:
            continue
        if not isinstance(run.selector, LookSelector):
            raise UserError(f"--race {n}: {run.out_dir.name} does not select by look; pass --select-by look and "
                            "--select-every (the toy model's defaults), or leave --race out")
        if n % cfg.select_every or n >= cfg.steps:
            raise UserError(f"--race {n}: must be a multiple of --select-every ({cfg.select_every}) and below "
                            f"--steps ({cfg.steps})")
        races.setdefault(race_file(run.out_dir, run.spec.root, cfg.method), []).append(run)
    return races


def run_races(races: dict[Path, list], progress: bool = True) -> set[int]:
    """Every undecided race's first leg (its seeds trained jointly to `race_steps`, checkpointed), then its decision,
    recorded before the winner goes on; returns the ids of the runs that stop (the races' losers)."""
    undecided = {f: group for f, group in races.items() if not f.is_file()}
    for f, group in undecided.items():
        late = next((r for r in group if r.step > r.config.race_steps), None)
        if late is not None:
            raise UserError(f"{f}: missing, but {late.out_dir.name} is past step {late.config.race_steps}, so its "
                            "race cannot be decided again; restore the file or choose a new --out")
    for n in sorted({group[0].config.race_steps for group in undecided.values()}):
        train_runs([r for group in undecided.values() if group[0].config.race_steps == n for r in group], progress,
                   pause_at=n)
    stopped = set()
    for f, group in races.items():
        if f in undecided:
            scores = {r.config.seed: r.selector.best_score for r in group}
            winner = next(r for r in group if r.config.seed == best_seed(scores))
            atomic_write_json(f, {"at_step": winner.config.race_steps, "seed": winner.config.seed,
                                  "winner": winner.out_dir.name,
                                  "scores": {r.out_dir.name: {"step": r.selector.best_step,
                                                              "score": r.selector.best_score} for r in group}})
            others = ", ".join(f"s{r.config.seed} {r.selector.best_score:.2f}" for r in group)
            print(f"lego invert: {winner.out_dir.name} won the race at step {winner.config.race_steps} and trains on "
                  f"(look score so far: {others})", file=sys.stderr)
        record = read_document(f, fix="delete it and the race's run folders, or choose a new --out")
        if sorted(record.get("scores", {})) != sorted(r.out_dir.name for r in group):
            raise UserError(f"{f}: a race among {', '.join(sorted(record.get('scores', {})))}, not these runs; "
                            "resume with that race's --seed, or choose a new --out")
        stopped |= {id(r) for r in group if r.out_dir.name != record.get("winner")}
    return stopped


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
    runs = [run for run, _ in built]
    races = race_groups(runs)
    for run, previous in built:
        open_run_folder(run, previous)
    todo = [r for r in runs if not (r.finished and (r.out_dir / EMBEDS_FILE).is_file())]
    stopped = run_races(races, progress=progress)
    todo = [r for r in todo if id(r) not in stopped]
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
