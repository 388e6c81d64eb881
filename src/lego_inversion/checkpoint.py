"""Resumable trainer state in one safetensors file (no pickle): learned rows, optimizer, LR schedule, random
streams and the fp16 gradient scaler.

    save_checkpoint(path, step, {"rows/text_encoder": block}, optimizer, scheduler, {"choices": g}, scaler)
    step = load_checkpoint(path, params, optimizer, scheduler, {"choices": g}, scaler)   # restores in place

Tensors go in the file; the few scalars (step, param-group settings, scheduler state) go in its JSON metadata.
The file is written atomically, so a run killed with `kill -9` resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .atomic import atomic_save_file
from .errors import UserError


def save_checkpoint(path: Path, step: int, params: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    scheduler, generators: dict[str, torch.Generator], scaler=None) -> Path:
    tensors = {name: p.detach().float() for name, p in params.items()}
    state = optimizer.state_dict()
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            tensors[f"optim/{idx}/{key}"] = torch.as_tensor(value).detach().float().reshape(-1) \
                if key == "step" else value.detach()
    for name, generator in generators.items():
        tensors[f"rng/{name}"] = generator.get_state()
    meta = {
        "step": step,
        "param_groups": state["param_groups"],
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    return atomic_save_file(path, tensors, {"lego_checkpoint": json.dumps(meta)})


def load_checkpoint(path: Path, params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                    scheduler, generators: dict[str, torch.Generator], scaler=None) -> int:
    """Restore state saved by `save_checkpoint` into live objects; returns the step to continue from."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["lego_checkpoint"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:
        raise UserError(f"{path}: unreadable checkpoint ({exc}); delete it to restart from scratch") from None
    with torch.no_grad():
        for name, param in params.items():
            if name not in tensors or tensors[name].shape != param.shape:
                raise UserError(f"{path}: checkpoint does not match this run ({name}); use a new --out folder")
            param.copy_(tensors[name].to(param))
    state: dict = {"state": {}, "param_groups": meta["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            value = value.reshape(()) if name == "step" else value
            state["state"].setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict(state)
    scheduler.load_state_dict(meta["scheduler"])
    for name, generator in generators.items():
        if f"rng/{name}" not in tensors:
            raise UserError(f"{path}: checkpoint has no random stream {name!r} (written by another version); "
                            "use a new --out folder")
        generator.set_state(tensors[f"rng/{name}"])
    if scaler is not None and scaler.is_enabled() and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return int(meta["step"])
