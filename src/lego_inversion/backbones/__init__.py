"""Backbone adapters: load any supported text-to-image model and drive it the same way.

    from lego_inversion.backbones import load_backbone, from_pipeline
    backbone = load_backbone(None)                      # the embedded toy-world model
    backbone = load_backbone("stabilityai/stable-diffusion-2-1", device="cuda", dtype="fp16")
    backbone = from_pipeline(pipe)                      # an already loaded diffusers pipeline

Supported pipeline classes are listed in ADAPTERS; anything else is refused with a clear error.
Weights load with safetensors only unless `allow_pickle=True` (`--allow-pickle`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..documents import read_document
from ..errors import UserError
from .base import Backbone, TextSlot
from .ldm import LDMBackbone
from .sdxl import StableDiffusionXLBackbone
from .stable_diffusion import StableDiffusionBackbone

ADAPTERS: dict[str, type[Backbone]] = {
    "StableDiffusionPipeline": StableDiffusionBackbone,
    "StableDiffusionXLPipeline": StableDiffusionXLBackbone,
    "LDMTextToImagePipeline": LDMBackbone,
}
TOY_MODEL = "toy"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
SETTINGS_FILE = "lego_inversion.json"  # optional per-model defaults, e.g. {"guidance_scale": 3.0}
# lego_inversion.json keys that set a Backbone attribute (the others are config.MODEL_DEFAULTS keys)
BACKBONE_SETTINGS = {"guidance_scale": "default_guidance_scale", "learning_rate": "default_learning_rate",
                     "concept_guidance_scale": "default_concept_guidance_scale",
                     "concept_floor": "default_concept_floor"}

__all__ = ["ADAPTERS", "Backbone", "TextSlot", "from_pipeline", "load_backbone", "quiet_progress_bars", "resolve_model"]


def resolve_model(model: str | os.PathLike | None) -> str:
    """The model id or folder to load: the embedded toy-world model's folder for None and its aliases ("toy",
    "embedded", "builtin", "none", "", any case, as a `base_model` or `--model` may name it); anything else as
    given. The one place that knows these aliases."""
    if model is None or str(model).strip().lower() in {TOY_MODEL, "embedded", "builtin", "none", ""}:
        try:
            from ..toyworld import model_path
        except ImportError:
            raise UserError("the embedded toy-world model is not available in this install; pass --model "
                            "with a diffusers model id or folder") from None
        return str(model_path())
    return str(model)


def from_pipeline(pipe, model_id: str | None = None) -> Backbone:
    """Wrap a loaded diffusers pipeline in its adapter."""
    name = type(pipe).__name__
    adapter = ADAPTERS.get(name)
    if adapter is None:
        raise UserError(f"{model_id or name}: pipeline class {name} is not supported; supported: "
                        f"{', '.join(sorted(ADAPTERS))}")
    backbone = adapter(pipe, model_id=model_id or getattr(pipe, "name_or_path", name))
    settings = Path(str(model_id or "")) / SETTINGS_FILE
    if model_id and settings.is_file():
        values = read_document(settings, fix="it holds the model's defaults, e.g. {\"guidance_scale\": 3.0}")
        from ..config import MODEL_DEFAULTS

        unknown = sorted(set(values) - {*BACKBONE_SETTINGS, *MODEL_DEFAULTS})
        if unknown:
            raise UserError(f"{settings}: unknown key {unknown[0]!r}; known: {', '.join(BACKBONE_SETTINGS)}, "
                            f"{', '.join(MODEL_DEFAULTS)}")
        for key, attribute in BACKBONE_SETTINGS.items():
            if key in values:
                value = values[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UserError(f"{settings}: {key} must be a number, not {value!r}")
                if key == "concept_floor":
                    from ..guidance import check_floor

                    check_floor(value, where=f"{settings}: concept_floor")
                setattr(backbone, attribute, float(value))
        backbone.inversion_defaults = {k: v for k, v in values.items() if k in MODEL_DEFAULTS}
    return backbone


def load_backbone(model: str | os.PathLike | None = None, device: str | None = None, dtype: str = "float32",
                  allow_pickle: bool = False) -> Backbone:
    """Load a diffusers pipeline (hub id or local folder; None = toy model) and wrap it in its adapter."""
    from diffusers import DiffusionPipeline

    model_id = resolve_model(model)
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    local = Path(model_id)
    if local.exists() and not (local / "model_index.json").is_file():
        raise UserError(f"{model_id}: not a diffusers pipeline folder (no model_index.json)")
    try:
        pipe = DiffusionPipeline.from_pretrained(
            model_id, dtype=DTYPES[dtype], use_safetensors=None if allow_pickle else True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ("" if local.exists() else " (no local folder of that name, and the model hub is unreachable or "
                "does not have it)")
        pickle_hint = "; if the model only has .bin/.ckpt weights and you trust it, pass --allow-pickle" \
            if "safetensors" in first.lower() else ""
        raise UserError(f"cannot load model {model_id!r}{hint}: {first}{pickle_hint}") from None
    pipe.set_progress_bar_config(disable=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.to(device)
    return from_pipeline(pipe, model_id=model_id)


def quiet_progress_bars() -> None:
    """Turn off diffusers', transformers' and huggingface_hub's own progress bars (model loading, downloads,
    sampling) for the rest of the process: what `--no-progress` means beyond the project's own bars."""
    import diffusers.utils.logging
    import huggingface_hub.utils
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
