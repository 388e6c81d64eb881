"""A run folder: what `lego invert` checks before writing to OUT_DIR, creates at the start, and restores on --resume.

    from lego_inversion.run_folder import check_inputs, open_run_folder
    check_inputs("examples/melted_cube", "runs/melted", config, resume=False)   # before the model loads
    run, previous = trainer.build_run(...)                                       # validates, writes nothing
    open_run_folder(run, previous)                                               # config.json, concept.json, checkpoint

OUT_DIR holds learned_embeds.safetensors, diffusers/, concept.json, config.json, checkpoint.safetensors,
selection.json (with `select_every`), validation/ and tensorboard/. A new run needs an empty or absent folder; a
resumed one must be the same run (same concept folder content, same settings apart from
`InversionConfig.RESUMABLE`). Nothing is left behind when opening fails on a folder this call created.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_write_json
from .concept import load_concept
from .config import InversionConfig
from .documents import read_document
from .errors import UserError
from .formats import CONCEPT_FILE

if TYPE_CHECKING:
    from .trainer import InversionRun

CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "config.json"
SELECTION_FILE = "selection.json"  # select_every: which step's rows the results hold, and their score
log = logging.getLogger(__name__)


def prepare_out_dir(out_dir: Path, resume: bool) -> InversionConfig | None:
    """Check OUT_DIR before anything is written; returns the saved config of the run to resume, if any."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        if resume:
            log.warning("%s holds no run to resume; starting a new one there", out_dir)
        return None
    if not resume:
        raise UserError(f"{out_dir}: folder exists and is not empty; pass --resume to continue that run or "
                        "choose a new --out")
    saved = read_document(out_dir / CONFIG_FILE, missing="not a lego invert run; choose a new --out",
                          fix="choose a new --out")
    return InversionConfig.from_dict(saved)


def check_resume(out_dir: Path, previous: InversionConfig, run: InversionRun) -> None:
    """A resumed run must be the same run: the same concept folder content and, apart from RESUMABLE fields,
    the same settings (with the model's defaults resolved)."""
    before = previous.resolved(run.backbone.inversion_defaults).to_dict()  # fields newer than the run: defaults
    changed = [k for k, v in run.config.to_dict().items()
               if k not in InversionConfig.RESUMABLE and before.get(k) != v]
    if changed:
        raise UserError(f"{out_dir / CONFIG_FILE}: --resume with different settings ({', '.join(changed)}); use "
                        "the run's settings or a new --out")
    if (out_dir / CONCEPT_FILE).is_file():
        saved = read_document(out_dir / CONCEPT_FILE, fix="delete the run folder or choose a new --out")
        if saved.get("fingerprint") not in (None, run.spec.fingerprint()):
            raise UserError(f"{out_dir}: this run learned {saved.get('name')!r} from other images or another "
                            f"concept.toml than {run.spec.root}; resume it with its own concept folder or "
                            "choose a new --out")


def check_inputs(concept_dir: str | Path, out_dir: str | Path, config: InversionConfig, resume: bool) -> None:
    """What can be checked before the model loads: the concept folder, context words, OUT_DIR."""
    load_concept(concept_dir, require_without=config.subject_separation)
    if not resume:
        prepare_out_dir(Path(out_dir), resume=False)


def open_run_folder(run: InversionRun, previous: InversionConfig | None) -> None:
    """Create OUT_DIR (config.json, concept.json) and restore its checkpoint when resuming."""
    out_dir = run.out_dir
    resuming = previous is not None and (out_dir / CHECKPOINT_FILE).is_file()
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / CONFIG_FILE, run.config.to_dict())
        if resuming:
            run.load_checkpoint()
        atomic_write_json(out_dir / CONCEPT_FILE, run.concept_json())
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
