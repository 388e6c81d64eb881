"""Atomic writes: every file the project writes appears whole or not at all.

    from lego_inversion.atomic import atomic_write_text, atomic_save_file, atomic_save_image, atomic_dir
    atomic_write_text("out/config.json", text)

Each helper writes a temporary file beside the target (same filesystem), flushes and fsyncs it, then renames it
over the target with `os.replace`, which is atomic on POSIX and Windows. A crash (even `kill -9`) leaves either
the old file or the new one, plus at worst a stray `*.tmp` that the next write overwrites. Files and folders get
the mode the umask gives any new file. `atomic_dir` does the same for a whole folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; the result gets the mode any new file would
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call `writer(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_file(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """`safetensors.torch.save_file`, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def atomic_save_image(path: str | os.PathLike, image) -> Path:
    """Save a PIL image atomically; the format comes from the target's suffix."""
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(Path(path).suffix.lower(), "PNG")
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """`torch.save` atomically: pickle files that other tools require (the Automatic1111 `.pt` embedding format,
    toy-model training state). Shared weights are never written this way."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Build a folder in a temporary sibling and swap it onto `path` when the block succeeds.

        with atomic_dir("examples/melted_cube") as tmp:
            atomic_save_image(tmp / "with" / "0.png", image)

    On success the old folder (if any, and `replace`) is renamed aside, the new one renamed into place, and the
    old one deleted, so at every moment `path` is either the complete old folder or the complete new one. With
    `replace=False` an existing `path` is left alone and the new folder discarded (another process that built
    the same folder first wins). On error the temporary folder is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    old = None
    try:
        yield tmp
        if path.exists():
            if not replace:
                return
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
