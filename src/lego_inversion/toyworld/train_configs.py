"""Settings of the two toy-world training commands, typed and validated; one source for each default and help.

    from lego_inversion.toyworld.train_configs import TrainConfig, OracleTrainConfig
    TrainConfig(out="runs/toy_model", unet_steps=3000)      # `lego toyworld train --unet-steps 3000`
    OracleTrainConfig(steps=10, n_images=64)                # `lego toyworld train-oracle --steps 10 ...`

Every field carries its help text in `metadata["help"]`; `lego toyworld train` / `train-oracle` make one
`--kebab-case` flag per field from it (toyworld/cli.py), so a default lives only here. This module imports
neither torch nor diffusers, so that `lego --help` stays fast. Each config is recorded beside what it trained
(`training.json`, `oracle.json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .training_data import P_DESCRIBE, P_GENERIC, P_NONE


def _at_least_one(where: str, config, names: tuple[str, ...]) -> None:
    for name in names:
        if int(getattr(config, name)) < 1:
            raise UserError(f"{where}: {name} must be >= 1 (got {getattr(config, name)})")


def _positive(where: str, config, names: tuple[str, ...]) -> None:
    for name in names:
        if not getattr(config, name) > 0:
            raise UserError(f"{where}: {name} must be > 0 (got {getattr(config, name)})")


def is_exported_model(folder: str) -> bool:
    """An exported pipeline folder (`model.export_model`, the bundled model's form) rather than a run folder."""
    return (Path(folder) / "model_index.json").is_file()


@dataclass
class TrainConfig:
    """Everything that determines a training run of the toy text-to-image model (VAE, then UNet)."""

    out: str = field(default="runs/toy_model", metadata={
        "help": "run folder: checkpoints, and the exported pipeline in RUN_DIR/model", "metavar": "RUN_DIR"})
    seed: int = field(default=0, metadata={"help": "seed of the data set, the noise and the initial weights"})
    n_images: int = field(default=20000, metadata={"help": "rendered training images"})
    p_none: float = field(default=P_NONE, metadata={"help": "share of plain-subject training images"})
    p_generic: float = field(default=P_GENERIC, metadata={
        "help": "share of generic-concept images (the rest: personalized variants)"})
    p_describe: float = field(default=P_DESCRIBE, metadata={
        "help": "how often a personalized variant's caption describes its look in neutral words (0: never)"})
    p_count_number: float = field(default=0.0, metadata={
        "help": "how often a described pile names its number (\"a tall pile of three red stars\"; 0: never)"})
    vae_steps: int = field(default=2200, metadata={"help": "autoencoder training steps"})
    vae_batch: int = field(default=16, metadata={"help": "autoencoder batch size"})
    vae_crop: int = field(default=64, metadata={
        "help": "train the (convolutional) autoencoder on random crops of this size (multiple of 8, <= 64)"})
    vae_lr: float = field(default=2e-3, metadata={"help": "autoencoder peak learning rate (cosine decay to 10 %)"})
    unet_steps: int = field(default=4000, metadata={"help": "UNet training steps"})
    unet_batch: int = field(default=32, metadata={"help": "UNet batch size"})
    unet_lr: float = field(default=5e-4, metadata={"help": "UNet learning rate after warm-up"})
    warmup: int = field(default=100, metadata={"help": "UNet linear learning-rate warm-up steps"})
    ema_decay: float = field(default=0.995, metadata={"help": "decay of the UNet's EMA weights (the export)"})
    cfg_dropout: float = field(default=0.1, metadata={
        "help": "probability that a caption is replaced by \"\" (classifier-free guidance)"})
    time_budget_min: float = field(default=44.0, metadata={
        "help": "stop the UNet phase once the whole run has taken this many minutes"})
    checkpoint_every: int = field(default=250, metadata={"help": "steps between resumable checkpoints"})
    init_from: str = field(default="", metadata={
        "help": "fine-tune: reuse the VAE of this finished run (or exported model folder, e.g. the bundled "
                "src/lego_inversion/toyworld/weights/model) and start the UNet from its EMA weights",
        "metavar": "RUN_DIR"})

    def __post_init__(self) -> None:
        where = "train config"
        _at_least_one(where, self, ("n_images", "vae_steps", "vae_batch", "unet_steps", "unet_batch", "warmup",
                                    "checkpoint_every"))
        _positive(where, self, ("vae_lr", "unet_lr", "time_budget_min"))
        if not (8 <= self.vae_crop <= 64 and self.vae_crop % 8 == 0):
            raise UserError(f"{where}: vae_crop must be a multiple of 8 in [8, 64] (got {self.vae_crop})")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise UserError(f"{where}: cfg_dropout must be in [0, 1) (got {self.cfg_dropout})")
        if not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"{where}: ema_decay must be in (0, 1) (got {self.ema_decay})")
        if min(self.p_none, self.p_generic, self.p_describe, self.p_count_number) < 0 \
                or self.p_none + self.p_generic > 1 or max(self.p_describe, self.p_count_number) > 1:
            raise UserError(f"{where}: p_none, p_generic, p_describe, p_count_number must be probabilities with "
                            f"p_none + p_generic <= 1 (got {self.p_none}, {self.p_generic}, {self.p_describe}, "
                            f"{self.p_count_number})")
        if self.init_from:
            names = ("vqvae", "unet") if is_exported_model(self.init_from) else ("vae_state.pt", "unet_state.pt")
            for name in names:
                if not (Path(self.init_from) / name).exists():
                    raise UserError(f"{where}: init_from {self.init_from}: {name} not found (give the --out folder "
                                    "of a finished `lego toyworld train` run, or an exported toy-model folder)")


@dataclass
class OracleTrainConfig:
    """Everything that determines a training run of the oracle classifier."""

    out: str = field(default="runs/oracle", metadata={
        "help": "folder for oracle.safetensors and oracle.json (copy both into toyworld/weights/oracle/)",
        "metavar": "DIR"})
    seed: int = field(default=0, metadata={"help": "seed of the renders, the augmentation and the weights"})
    n_images: int = field(default=12000, metadata={"help": "fresh renders to train on"})
    steps: int = field(default=1000, metadata={"help": "training steps"})
    batch: int = field(default=64, metadata={"help": "batch size"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (one-cycle schedule)"})
    width: int = field(default=24, metadata={"help": "channels of the first convolution"})
    n_test: int = field(default=2000, metadata={
        "help": "fresh renders (seeds never trained on) that measure the recorded accuracy"})

    def __post_init__(self) -> None:
        _at_least_one("oracle config", self, ("n_images", "steps", "batch", "width", "n_test"))
        _positive("oracle config", self, ("lr",))
