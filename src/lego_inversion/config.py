"""Every knob of `lego invert`, typed and validated; saved as `config.json` beside the results.

    from lego_inversion.config import InversionConfig
    cfg = InversionConfig(method="lego", steps=400, seed=0)
    cfg.subject_separation, cfg.use_context_loss       # derived from the method, never set by hand

Methods are one code path with parts switched off (Lego §5.5 ablation):
    lego      Subject Separation (§4.3) + Context Loss (§4.4)            (Eq. 3)
    ss-only   Subject Separation, no Context Loss
    cl-only   Context Loss, subject named in words (ReVersion-like)
    ti        neither: Textual Inversion (Gal et al.), one vector per [[concept]] table
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError

METHODS = ("lego", "ti", "cl-only", "ss-only")
MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class InversionConfig:
    """Trainer settings. Defaults are the ones measured on the toy world (docs/toyworld_benchmark.md)."""

    method: str = "lego"
    steps: int = 400
    learning_rate: float | None = None  # None: the model's default (Backbone.default_learning_rate, see below)
    weight_decay: float = 0.0
    batch_size: int = 2              # images per image set per step (subject batch + concept batch share a UNet call)
    context_weight: float = 1e-2     # λ of Eq. 3
    temperature: float = 0.07        # τ of Eq. 2
    subject_from_with: bool = True   # §4.3: <subj> is optimised on I_C̄ *and* I_C; False: on I_C̄ only
    resolution: int | None = None    # None: the backbone's native size
    flip_p: float = 0.5              # horizontal-flip augmentation (both flips are VAE-encoded once, up front)
    seed: int = 0
    checkpoint_every: int = 50
    validate_every: int = 0          # 0: only at the end
    validation_steps: int = 25       # sampler steps for validation images
    validation_images: int = 4
    mixed_precision: str = "no"      # autocast dtype on CUDA; the learned rows stay fp32
    device: str | None = None        # None: cuda if available, else cpu
    lr_warmup_steps: int = 0
    log_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"--method {self.method!r} is not a method; choose one of: {', '.join(METHODS)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise UserError(f"mixed_precision must be one of {MIXED_PRECISION}, not {self.mixed_precision!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "validation_steps", "validation_images", "log_every"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("validate_every", "lr_warmup_steps"):
            if int(getattr(self, name)) < 0:
                raise UserError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise UserError(f"learning_rate must be positive, not {self.learning_rate}")
        if self.context_weight < 0 or self.weight_decay < 0:
            raise UserError("context_weight and weight_decay must be >= 0")
        if not self.temperature > 0:
            raise UserError(f"temperature must be positive, not {self.temperature}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise UserError(f"flip_p must lie in [0, 1], not {self.flip_p}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise UserError(f"resolution must be a multiple of 8, not {self.resolution}")

    @property
    def subject_separation(self) -> bool:
        """§4.3: a dedicated <subj> token learned from without/ images."""
        return self.method in ("lego", "ss-only")

    @property
    def use_context_loss(self) -> bool:
        """§4.4: Eq. 2 on every concept token."""
        return self.method in ("lego", "cl-only") and self.context_weight > 0

    # Settings that may change between a run and its --resume without changing what is being learned.
    RESUMABLE = ("steps", "checkpoint_every", "validate_every", "validation_steps", "validation_images",
                 "device", "log_every")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InversionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(sorted(names))}")
        return cls(**data)


def parse_overrides(cls, items: list[str], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """["learning_rate=1e-2", "subject_from_with=false"] -> keyword arguments for the dataclass `cls`, typed by
    its field annotations (bool, int, float, else str). Raises ValueError naming the bad item."""
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types or key in exclude:
            raise ValueError(f"{item!r}: use KEY=VALUE with a {cls.__name__} field"
                             + (f" other than {'/'.join(exclude)}" if exclude else ""))
        kind = types[key]
        try:
            if "bool" in kind:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out[key] = value.lower() in ("true", "1")
            else:
                out[key] = int(value) if kind.startswith("int") else float(value) if "float" in kind else value
        except ValueError:
            raise ValueError(f"{item!r}: {key} takes a {kind.split(' ')[0]}") from None
    return out

