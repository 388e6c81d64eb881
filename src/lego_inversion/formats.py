"""Learned-embedding files: our own format, and the formats other tools read.

    from lego_inversion.formats import save_learned, load_learned, export
    save_learned(out_dir, vectors, slot_names, meta)      # learned_embeds.safetensors + diffusers/*.safetensors
    concept = load_learned("runs/melted")                 # -> LearnedConcept
    export(concept, "a1111", "exports/")                  # exports/melted.pt: string_to_param (Automatic1111)
    export(concept, "comfyui")                            # ./melted.safetensors: emb_params; clip_l/clip_g for SDXL
    export(concept, "diffusers", "melted_diffusers/")     # one single-key file per token

`learned_embeds.safetensors`: key = token string (first text encoder), `token::<slot>` for further text encoders
(SDXL's text_encoder_2); metadata "lego_inversion" = JSON of base model, backbone kind ("sd", "sdxl", "ldm"),
method, config and concept. Concept files are read with safetensors only: `load_learned` refuses any other file.
The one pickle this module writes is Automatic1111's `.pt` layout (tensors, strings and ints only, so it loads
with `torch.load(weights_only=True)`); it never reads pickles.

Automatic1111, ComfyUI and kohya take the trigger word from the embedding's file name, so `export` names the file
after the concept (`<name>.pt` / `<name>.safetensors` inside a folder) and warns when a given file name differs.
Those tools load CLIP embeddings only: concepts learned on a BERT text encoder (LDM-256, the toy model) are
refused for them; the diffusers export works for every backbone.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_save_file, atomic_torch_save, atomic_write
from .errors import UserError

EMBEDS_FILE = "learned_embeds.safetensors"
CONCEPT_FILE = "concept.json"
FORMATS = ("a1111", "comfyui", "kohya", "diffusers")
TOOLS = {"a1111": "Automatic1111", "comfyui": "ComfyUI", "kohya": "kohya", "diffusers": "diffusers"}
BERT_BACKBONES = {"ldm"}  # backbone kinds whose text encoder is BERT (LDM-256, the toy model)
logger = logging.getLogger(__name__)
SDXL_KEYS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}


@dataclass
class LearnedConcept:
    """A learned concept as loaded from a run folder."""

    name: str
    tokens: list[str]                              # concept tokens, prompt order
    subject_token: str | None
    vectors: dict[str, list[torch.Tensor]]         # token -> one [d] vector per text encoder (slot)
    slots: list[str]
    meta: dict = field(default_factory=dict)
    source: Path | None = None                     # the run folder it was loaded from

    @property
    def all_tokens(self) -> list[str]:
        return ([self.subject_token] if self.subject_token else []) + self.tokens

    def matrix(self, tokens: list[str], slot: int = 0) -> torch.Tensor:
        return torch.stack([self.vectors[t][slot] for t in tokens])


def file_stem(token: str) -> str:
    """'<melted>' -> 'melted': a safe file name for a token."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", token.strip("<>")).strip("._") or "token"
    return stem


def _key(token: str, slot: int, slot_name: str) -> str:
    return token if slot == 0 else f"{token}::{slot_name}"


def save_learned(out_dir: Path, vectors: dict[str, list[torch.Tensor]], slots: list[str], meta: dict) -> Path:
    """Write learned_embeds.safetensors and diffusers/ (one single-key file per token and text encoder)."""
    out_dir = Path(out_dir)
    tensors = {_key(t, s, name): vecs[s].float().contiguous() for t, vecs in vectors.items()
               for s, name in enumerate(slots)}
    metadata = {"lego_inversion": json.dumps(meta, default=str), "format": "lego-inversion/1"}
    path = atomic_save_file(out_dir / EMBEDS_FILE, tensors, metadata)
    export_diffusers(vectors, slots, out_dir / "diffusers")
    return path


def load_learned(path: str | Path) -> LearnedConcept:
    """Load a run folder (or its learned_embeds.safetensors)."""
    from safetensors import safe_open

    path = Path(path)
    file = path / EMBEDS_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no {EMBEDS_FILE}; pass the --out folder of a finished `lego invert` run")
    if file.suffix != ".safetensors":
        raise UserError(f"{file}: only .safetensors concept files are loaded")
    try:
        with safe_open(str(file), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("lego_inversion", "{}"))
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise UserError(f"{file}: not a readable safetensors file ({exc})") from None
    concept = meta.get("concept") or {}
    slots = meta.get("slots") or ["text_encoder"]
    tokens = meta.get("tokens") or [k for k in tensors if "::" not in k]
    subject = meta.get("subject_token")
    vectors = {}
    for token in ([subject] if subject else []) + tokens:
        try:
            vectors[token] = [tensors[_key(token, s, name)] for s, name in enumerate(slots)]
        except KeyError as exc:
            raise UserError(f"{file}: missing tensor {exc.args[0]!r}; the file is incomplete") from None
    return LearnedConcept(name=concept.get("name", file.parent.name), tokens=tokens, subject_token=subject,
                          vectors=vectors, slots=slots, meta=meta, source=file.parent)


def export_diffusers(vectors: dict[str, list[torch.Tensor]], slots: list[str], folder: Path) -> list[Path]:
    """One file per token (single key = the token) that `pipe.load_textual_inversion(path)` loads unchanged.

    With several text encoders (SDXL) each gets a subfolder named after it: load each file into its encoder
    with `load_textual_inversion(file, token=..., text_encoder=..., tokenizer=...)`.
    """
    written = []
    for s, slot in enumerate(slots):
        base = folder if len(slots) == 1 else folder / slot
        for token, vecs in vectors.items():
            written.append(atomic_save_file(base / f"{file_stem(token)}.safetensors", {token: vecs[s].float()}))
    return written


def export_path(concept: LearnedConcept, fmt: str, out: str | Path | None = None) -> Path:
    """Where `export` writes: a file for a1111/comfyui/kohya, a folder for diffusers.

    `out` None means the current folder. A folder (an existing one, or a path ending in "/") gets a file named
    after the concept, because the other tools take the trigger word from the file name; a file path is used as
    given, with the format's suffix (.pt for Automatic1111 on one text encoder, else .safetensors)."""
    stem = file_stem(concept.name)
    if fmt == "diffusers":
        return Path(out) if out is not None else Path(f"{stem}-diffusers")
    suffix = ".pt" if fmt == "a1111" and len(concept.slots) == 1 else ".safetensors"
    text = "." if out is None else str(out)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return Path(text) / f"{stem}{suffix}"
    target = Path(text)
    return target if target.suffix == suffix else target.with_suffix(suffix)


def _check_exportable(concept: LearnedConcept, fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    bert = concept.meta.get("backbone") in BERT_BACKBONES or "bert" in concept.slots
    if bert and fmt != "diffusers":
        where = concept.source or concept.name
        raise UserError(f"{where}: concept {concept.name!r} was learned on a BERT text encoder "
                        f"({concept.meta.get('base_model', 'LDM-256 or the toy model')}), which {TOOLS[fmt]} cannot "
                        "load (it takes CLIP embeddings only); use --format diffusers")


def export(concept: LearnedConcept, fmt: str, out: str | Path | None = None,
           include_subject: bool = False) -> list[Path]:
    """Write `concept` (its concept tokens as one multi-vector embedding) in another tool's format.

    `out`: see `export_path`. A1111/ComfyUI/kohya files hold all concept tokens as one multi-vector embedding
    whose trigger word is the file's stem; with `include_subject`, `<stem>-subject` holds the subject token."""
    _check_exportable(concept, fmt)
    target = export_path(concept, fmt, out)
    if fmt == "diffusers":
        vectors = {t: concept.vectors[t] for t in (concept.all_tokens if include_subject else concept.tokens)}
        return export_diffusers(vectors, concept.slots, target) + _export_unet_parts(concept, fmt, target)
    if target.stem != file_stem(concept.name):
        logger.warning("%s: %s takes the trigger word from the file name, so prompts must say %r, not the concept "
                       "name %r; pass a folder as --out to name the file after the concept",
                       target, TOOLS[fmt], target.stem, concept.name)
    groups = [(concept.name, concept.tokens, target)]  # `name` is informative only: the tools use the file name
    if include_subject and concept.subject_token:
        groups.append((f"{concept.name}-subject", [concept.subject_token],
                       target.with_name(f"{target.stem}-subject{target.suffix}")))
    written = []
    for name, tokens, path in groups:
        if len(concept.slots) > 1:  # SDXL: both tools read clip_l / clip_g (safetensors)
            tensors = {SDXL_KEYS.get(s, s): concept.matrix(tokens, i_slot) for i_slot, s in enumerate(concept.slots)}
            written.append(atomic_save_file(path, tensors))
        elif fmt == "a1111":  # Automatic1111's textual-inversion .pt layout
            payload = {"string_to_token": {"*": 265}, "string_to_param": {"*": concept.matrix(tokens)}, "name": name,
                       "step": int(concept.meta.get("step", 0)), "sd_checkpoint": None, "sd_checkpoint_name": None}
            written.append(atomic_torch_save(path, payload))
        else:  # comfyui / kohya
            written.append(atomic_save_file(path, {"emb_params": concept.matrix(tokens)}))
    return written + _export_unet_parts(concept, fmt, target)


def _export_unet_parts(concept: LearnedConcept, fmt: str, target: Path) -> list[Path]:
    """A fine-tuning baseline's UNet parts beside its embedding: DreamBooth's LoRA in the kohya-ss layout that
    Automatic1111, ComfyUI and kohya load (`<stem>-lora.safetensors`; use the embedding's trigger word in the
    prompt and load the LoRA beside it), or the diffusers files as they are."""
    import shutil

    from .finetune import CUSTOM_DIFFUSION_FILE, LORA_FILE, lora_to_kohya

    source = concept.source
    if source is None:
        return []
    if fmt == "diffusers":
        copied = []
        for name in (LORA_FILE, CUSTOM_DIFFUSION_FILE):
            if (source / name).is_file():
                copied.append(atomic_write(target / name, lambda tmp, src=source / name: shutil.copyfile(src, tmp)))
        return copied
    if (source / CUSTOM_DIFFUSION_FILE).is_file():
        logger.warning("%s: Custom Diffusion's K/V weights load in diffusers only (%s); %s gets the embedding alone",
                       source, CUSTOM_DIFFUSION_FILE, TOOLS[fmt])
    if not (source / LORA_FILE).is_file():
        return []
    lora = target.with_name(f"{target.stem}-lora.safetensors")
    return [atomic_save_file(lora, lora_to_kohya(source))]
