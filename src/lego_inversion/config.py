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

METHODS = ("lego", "ti", "cl-only", "ss-only", "reversion", "dreambooth", "custom-diffusion")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine", "linear")
SIMILARITIES = ("cosine", "dot")
SELECT_BY = ("exemplars", "look")
# Fields left None take the model's value: its folder's lego_inversion.json, else these (the literature's
# settings for CLIP models: Textual Inversion's uniform timesteps, one caption template per set, constant LR).
MODEL_DEFAULTS = {"steps": 400, "timestep_skew": 0.0, "caption_variants": 1, "lr_schedule": "constant",
                  "context_similarity": "cosine", "vectors_per_token": 1, "norm_cap": 0.0, "init_decay": 0.0,
                  "subject_warmup": 0, "timestep_min": 0.0, "snr_gamma": 0.0, "select_every": 0, "hue_variants": 1,
                  "select_by": "exemplars", "select_subjects": "", "select_steps": 25, "ema_decay": 0.0,
                  "rewind": 0.0, "select_average": 1, "select_guidance": "", "select_floor": 0.0,
                  "subject_frozen_above": 1.0}


# Openings that `caption_variants` puts in place of a caption's "a photo of" (Textual Inversion's templates).
CAPTION_OPENINGS = ("a photo of", "a rendering of", "a cropped photo of", "a close-up photo of", "a good photo of",
                    "a bright photo of", "a picture of", "an image of")


def option(default: Any, help: str, *, flag: str | None = None, choices: tuple | None = None,
           cli: bool = True) -> Any:
    """A config field with its command-line help: the one source of an option's default, help and choices.
    `flag` overrides the generated `--field-name`; `cli=False` keeps a field off the command line."""
    metadata = {"help": help, "flag": flag, "choices": choices, "cli": cli}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class InversionConfig:
    """Trainer settings. Where each default comes from: docs/toyworld_benchmark.md and the field's help."""

    method: str = option("lego", "what to learn: lego, its §5.5 ablations ti, cl-only, ss-only, or the baselines "
                                 "reversion, dreambooth (LoRA), custom-diffusion (baselines.py)",
                         choices=METHODS, cli=False)
    steps: int | None = option(None, "optimisation steps; None: the model's (400, unless its lego_inversion.json "
                                     "sets another)")
    learning_rate: float | None = option(
        None, "AdamW learning rate; None: the model's (5e-3 for CLIP text encoders, as Textual Inversion; the "
        "toy model's lego_inversion.json sets its own)", flag="--lr")
    weight_decay: float = option(0.0, "AdamW weight decay on the learned rows")
    batch_size: int = option(2, "images per image set per step (the subject and concept batches share one UNet "
                                "call)")
    context_weight: float = option(1e-2, "λ of Eq. 3: weight of the Context Loss")
    temperature: float = option(0.07, "τ of Eq. 2 (cosine similarity / τ; unused with --context-similarity dot)")
    context_similarity: str | None = option(
        None, "s(c, P) in Eq. 2: cosine (cosine / τ, ReVersion's form) or dot (c · P, no τ, as Eq. 2 is printed); "
        "None: the model's (cosine)", choices=SIMILARITIES)
    timestep_skew: float | None = option(
        None, "α of the timestep distribution p(t) ∝ 1 - α·cos(π t / T): 0 uniform (Textual Inversion), 0.5 "
        "ReVersion's importance sampling toward high noise, where shape, pose and count are decided; None: the "
        "model's (0)")
    timestep_min: float | None = option(
        None, "leave out training timesteps below this fraction of T (the low-noise steps, whose loss is large and "
        "carries little of a look's shape); 0: none; None: the model's (0)")
    snr_gamma: float | None = option(
        None, "Min-SNR-γ loss weighting (Hang et al. 2023; diffusers' --snr_gamma): each sample's Eq. 1 term times "
        "min(SNR, γ)/SNR, so low-noise steps weigh less; 0: off; None: the model's (0)")
    caption_variants: int | None = option(
        None, "caption templates per image set (Textual Inversion's augmentation): the concept's own template "
        "plus N-1 rewordings of its 'a photo of' opening; None: the model's (1)")
    hue_variants: int | None = option(
        None, "hue rotations per exemplar image (the image and N-1 turns of its hue, evenly spaced around the colour "
        "wheel, each encoded once; a sample takes one at random), so no learned token can carry the exemplar's "
        "colour; greys and white are unchanged; None: the model's (1)")
    vectors_per_token: int | None = option(
        None, "embedding vectors learned for each [[concept]] token (<melted> -> <melted> <melted_1> ...; each "
        "with the token's init word and context sets); None: the model's (1)")
    lr_schedule: str | None = option(None, "learning-rate schedule after warm-up; None: the model's (constant)",
                                     choices=LR_SCHEDULES)
    norm_cap: float | None = option(
        None, "keep each learned row's norm at most this multiple of its initializer word's norm, so it stays "
        "among the word embeddings (projected after every update); 0: no cap; None: the model's (0)")
    init_decay: float | None = option(
        None, "decoupled decay of the learned rows toward their initializer words (L2-SP, Li et al. 2018): after "
        "every update rows -= lr · γ · (rows - init), a restoring force on directions the loss leaves flat, where "
        "noise-dominated steps would otherwise random-walk; 0: off; None: the model's (0)")
    subject_warmup: int | None = option(
        None, "Subject Separation: the first K of the steps train <subj> alone on without/ images, so the subject "
        "is explained before the concept tokens start to learn; None: the model's (0)")
    select_every: int | None = option(
        None, "every K steps (and at step 0) score the learned rows (--select-by) and keep the best; the results "
        "hold the best rows, not the last (docs/inversion_quality.md (g), (o), (p)); 0: off, the last rows; None: the "
        "model's (0); methods that fine-tune the UNet never select")
    select_average: int | None = option(
        None, "with --select-every: the results hold the mean of the K best-scored rows of the run (a soup of one "
        "run's checkpoints, Wortsman et al. 2022), not the best alone, whose lead over the next is often under one "
        "judged image (docs/inversion_quality.md (aj)); --rewind still goes back to the best; 1: the best rows; "
        "None: the model's (1)")
    select_guidance: str | None = option(
        None, "with --select-by look: after training, judge the kept rows at these concept guidance ratios "
        "(comma-separated; r: generation's --concept-guidance-scale r times the guidance scale, 1: plain guidance) on "
        "fresh noise, and record the best with the rows; generation then guides this concept at it by default "
        "(docs/inversion_quality.md (ai)); empty: off; None: the model's (off; the toy model's 1,1.5,2)")
    ema_decay: float | None = option(
        None, "average the learned rows over the steps, exponentially with this decay d (Polyak averaging, "
        "bias-corrected as Adam's moments; the last 1/(1-d) steps weigh most): --select-every scores the average, "
        "and the results hold it, not the last iterate (docs/inversion_quality.md (w)); 0: off; None: the model's (0)")
    rewind: float | None = option(
        None, "with --select-every: when an offered score trails the best so far by at least this much (look: a "
        "fraction of the images; exemplars: the loss), training goes back to the best rows with fresh optimizer "
        "moments and goes on with new draws, so the remaining steps start again from the best point instead of "
        "walking on from a worse one (docs/inversion_quality.md (y)); 0: off; None: the model's (0)")
    select_draws: int = option(16, "select_every with select_by exemplars: training batches in the fixed scoring set")
    select_by: str | None = option(
        None, "select_every: what scores the rows: `exemplars` (the denoising loss on fixed draws of the run's own "
        "exemplars) or `look` (the concept drawn on --select-subjects from fixed noise and judged: the toy world's "
        "oracle, else BLIP-2 yes/no VQA on the concept's [evaluation] questions); with look and several --seed, "
        "the best run is also written as <concept>-<method>-best; None: the model's (exemplars)",
        choices=SELECT_BY)
    select_subjects: str | None = option(
        None, "select_by look: comma-separated subjects to judge the look on, never your final targets (the "
        "exemplar's own subject is left out); empty: the concept's [validation] subjects; None: the model's (empty)")
    select_images: int = option(4, "select_by look: images per select subject at each scoring")
    select_look_credit: float = option(
        0.0, "select_by look with the toy world's oracle: the score of an image that shows the look but not cleanly "
        "(the exemplar's appearance in it, or not the prompt's subject); a clean hit scores 1. 0: clean hits only; "
        "1: the look alone, as the VQA judge off the toy world reads it (docs/inversion_quality.md (ak))")
    select_floor: float | None = option(
        None, "select_by look: the concept floor of the judged images (generation's --concept-floor; guidance.py), "
        "so the judge sees the look as generation draws it (docs/inversion_quality.md (am)); 0: the concept tokens at "
        "every step; None: the model's (0)")
    select_steps: int | None = option(
        None, "select_by look: sampler steps for each judged image (a cheaper draw is a noisier judge; "
        "docs/inversion_quality.md (af)); None: the model's (25; the toy model's 5)")
    race_steps: int = option(
        0, "several --seed with --select-by look: every seed trains to step N, then only the one whose look score so "
        "far is best (ties: the lower seed) trains on, per concept folder and method; the others stop there, "
        "checkpointed, and OUT/<concept>-<method>-race.json records the race. N is a multiple of --select-every and "
        "below --steps; 0: every seed trains to the end (docs/inversion_quality.md (t), (u))", flag="--race")
    select_vqa_model: str = option("Salesforce/blip2-flan-t5-xl", "select_by look off the toy world: the BLIP-2 "
                                   "checkpoint that judges (a local folder or a cached hub id)")
    subject_from_with: bool = option(True, "§4.3: <subj> learns from with/ images too (off: from without/ only)")
    subject_frozen_p: float = option(
        0.0, "Subject Separation: the fraction of concept-batch samples in which <subj> is a constant, so their look "
        "must go into the concept tokens (between §4.3's 0 and --no-subject-from-with's 1)")
    subject_frozen_steps: int = option(
        0, "Subject Separation: for the first K steps <subj> is a constant in the concept batch (as with "
        "--no-subject-from-with), then it learns from both sets (§4.3), so look selection judges rows of both kinds; "
        "it lifted the toy held-out count and tied elsewhere (docs/inversion_quality.md (ao)); 0: off (§4.3)")
    subject_frozen_above: float | None = option(
        None, "Subject Separation: <subj> is a constant in the concept-batch samples whose timestep is at or above f·T "
        "(high noise, where shape, pose and count are decided) and learns from the others; 1: off (§4.3); None: the "
        "model's (1; the toy model's 0.65, docs/inversion_quality.md (aq))")
    subject_word_p: float = option(
        0.0, "Subject Separation: the fraction of concept-batch samples captioned with the subject's initializer word "
        "instead of <subj>, as the concept meets a plain word on new subjects at generation; 0: always <subj> (§4.3)")
    contrast_weight: float = option(
        0.0, "Subject Separation: weight of a contrastive term on the without/ images captioned with the concept "
        "(<subj> a constant there): each must denoise worse than with its own caption by --contrast-margin, so the "
        "concept tokens carry what tells with/ from without/ (losses.contrast_loss; it lost on the toy world: "
        "docs/inversion_quality.md (an)); 0: off (Eq. 3)")
    contrast_margin: float = option(0.1, "the contrastive term's margin m, a fraction of the subject caption's loss "
                                         "(the less costly of the two measured: docs/inversion_quality.md (an))")
    resolution: int | None = option(None, "training image size in pixels; None: the model's native size")
    flip_p: float = option(0.5, "probability of a horizontal flip per sample (both flips are encoded once)")
    seed: int = option(0, "random seed of the run", cli=False)
    checkpoint_every: int = option(50, "write checkpoint.safetensors every K steps (and at the end)")
    validate_every: int = option(0, "write a validation grid every K steps; 0: only at the end")
    validation_steps: int = option(25, "sampler steps for validation images")
    validation_images: int = option(4, "images in each validation grid")
    mixed_precision: str = option("no", "on CUDA: store the frozen model in this dtype and autocast; the learned "
                                        "rows stay fp32 (fp16 uses a gradient scaler)", choices=MIXED_PRECISION)
    compile: bool = option(False, "torch.compile the UNet with CUDA graphs (CUDA; ~2 min to compile, "
                                   "then 2.7x the eager step at batch 4 on an H100: docs/throughput.md)")
    device: str | None = option(None, "torch device; None: cuda if available, else cpu")
    lr_warmup_steps: int = option(0, "linear learning-rate warm-up steps")
    log_every: int = option(10, "log losses (progress bar, TensorBoard) every K steps")
    lora_rank: int = option(4, "dreambooth: LoRA rank (diffusers' train_dreambooth_lora.py default)")
    lora_alpha: float | None = option(None, "dreambooth: LoRA alpha, scale alpha / rank; None: the rank")
    lora_targets: str = option("to_q,to_k,to_v,to_out.0", "dreambooth: comma-separated UNet module names with LoRA")
    unet_learning_rate: float | None = option(
        None, "dreambooth / custom-diffusion: learning rate of the UNet parts; None: 1e-4 (LoRA) / 1e-5 (Custom "
        "Diffusion), diffusers' example scripts")
    prior_preservation: bool = option(False, "dreambooth / custom-diffusion: class-specific prior preservation "
                                             "with images the model generates of the class prompt")
    class_images: int = option(8, "prior preservation: class images (generated once, cached)")

    def __post_init__(self) -> None:
        if self.lora_rank < 1 or self.class_images < 1:
            raise UserError("lora_rank and class_images must be at least 1")
        if self.method not in METHODS:
            raise UserError(f"--method {self.method!r} is not a method; choose one of: {', '.join(METHODS)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise UserError(f"mixed_precision must be one of {MIXED_PRECISION}, not {self.mixed_precision!r}")
        if self.steps is not None and int(self.steps) < 1:
            raise UserError(f"steps must be at least 1, not {self.steps}")
        if self.caption_variants is not None and not 1 <= int(self.caption_variants) <= len(CAPTION_OPENINGS):
            raise UserError(f"caption_variants must lie in [1, {len(CAPTION_OPENINGS)}], not {self.caption_variants}")
        if self.hue_variants is not None and not 1 <= int(self.hue_variants) <= 12:
            raise UserError(f"hue_variants must lie in [1, 12], not {self.hue_variants}")
        if self.vectors_per_token is not None and not 1 <= int(self.vectors_per_token) <= 8:
            raise UserError(f"vectors_per_token must lie in [1, 8], not {self.vectors_per_token}")
        if self.timestep_skew is not None and not 0.0 <= self.timestep_skew < 1.0:
            raise UserError(f"timestep_skew must lie in [0, 1), not {self.timestep_skew}")
        if self.timestep_min is not None and not 0.0 <= self.timestep_min <= 0.95:
            raise UserError(f"timestep_min must lie in [0, 0.95], not {self.timestep_min}")
        if self.snr_gamma is not None and self.snr_gamma < 0:
            raise UserError(f"snr_gamma must be >= 0 (0: off), not {self.snr_gamma}")
        if self.norm_cap is not None and not (self.norm_cap == 0 or self.norm_cap >= 0.5):
            raise UserError(f"norm_cap must be 0 (no cap) or at least 0.5, not {self.norm_cap}")
        if self.init_decay is not None and not 0 <= self.init_decay <= 100:
            raise UserError(f"init_decay must lie in [0, 100] (0: off), not {self.init_decay}")
        if (self.select_every is not None and int(self.select_every) < 0) or self.select_draws < 1:
            raise UserError(f"select_every must be >= 0 (0: off) and select_draws >= 1, not {self.select_every} "
                            f"and {self.select_draws}")
        if self.select_average is not None and (isinstance(self.select_average, bool) or int(self.select_average) < 1):
            raise UserError(f"select_average must be at least 1 (1: the best rows), not {self.select_average}")
        if self.select_guidance is not None:
            self.guidance_ratios  # noqa: B018 (parses and checks the list)
        if self.select_by is not None and self.select_by not in SELECT_BY:
            raise UserError(f"select_by must be one of {SELECT_BY}, not {self.select_by!r}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"ema_decay must lie in [0, 1) (0: off), not {self.ema_decay}")
        if self.ema_decay and self.finetunes_unet:
            raise UserError(f"ema_decay averages learned rows only; {self.method} fine-tunes the UNet: leave it 0")
        if self.rewind is not None and self.rewind < 0:
            raise UserError(f"rewind must be >= 0 (0: off), not {self.rewind}")
        if self.rewind and (self.finetunes_unet or self.ema_decay):
            raise UserError("rewind goes back to the rows selection kept; "
                            + (f"{self.method} fine-tunes the UNet, which is not kept" if self.finetunes_unet else
                               "with ema_decay those are a step average, not a point to train on")
                            + ": leave rewind 0")
        if isinstance(self.race_steps, bool) or int(self.race_steps) < 0:
            raise UserError(f"race_steps must be >= 0 (0: no race), not {self.race_steps}")
        if isinstance(self.select_look_credit, bool) or not 0.0 <= self.select_look_credit <= 1.0:
            raise UserError(f"select_look_credit must lie in [0, 1] (0: clean hits only), not "
                            f"{self.select_look_credit}")
        if self.select_floor is not None:
            from .guidance import check_floor

            check_floor(self.select_floor, where="select_floor")
        if self.select_images < 1:
            raise UserError(f"select_images must be at least 1, not {self.select_images}")
        if self.select_steps is not None and (isinstance(self.select_steps, bool) or int(self.select_steps) < 1):
            raise UserError(f"select_steps must be at least 1, not {self.select_steps}")
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"lr_schedule must be one of {LR_SCHEDULES}, not {self.lr_schedule!r}")
        if self.context_similarity is not None and self.context_similarity not in SIMILARITIES:
            raise UserError(f"context_similarity must be one of {SIMILARITIES}, not {self.context_similarity!r}")
        for name in ("batch_size", "checkpoint_every", "validation_steps", "validation_images", "log_every"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("validate_every", "lr_warmup_steps", "subject_frozen_steps", "subject_warmup"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 0:
                raise UserError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise UserError(f"learning_rate must be positive, not {self.learning_rate}")
        for name in ("resolution", "learning_rate"):
            if getattr(self, name) is not None and isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be a number, not {getattr(self, name)}")
        if self.context_weight < 0 or self.weight_decay < 0:
            raise UserError("context_weight and weight_decay must be >= 0")
        if not self.temperature > 0:
            raise UserError(f"temperature must be positive, not {self.temperature}")
        for name in ("subject_frozen_p", "subject_word_p", "flip_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name} must lie in [0, 1], not {getattr(self, name)}")
        if self.subject_frozen_above is not None and not 0.0 < self.subject_frozen_above <= 1.0:
            raise UserError(f"subject_frozen_above must lie in (0, 1] (1: off), not {self.subject_frozen_above}")
        if self.contrast_weight < 0 or not 0.0 <= self.contrast_margin <= 1.0:
            raise UserError(f"contrast_weight must be >= 0 and contrast_margin in [0, 1], not {self.contrast_weight} "
                            f"and {self.contrast_margin}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise UserError(f"resolution must be a multiple of 8, not {self.resolution}")

    @property
    def subject_separation(self) -> bool:
        """§4.3: a dedicated <subj> token learned from without/ images."""
        return self.method in ("lego", "ss-only")

    @property
    def finetunes_unet(self) -> bool:
        """DreamBooth / Custom Diffusion: trainable UNet parts, so the run cannot share a UNet call with others."""
        return self.method in ("dreambooth", "custom-diffusion")

    @property
    def guidance_ratios(self) -> list[float]:
        """`select_guidance` as numbers (empty: off)."""
        try:
            ratios = [float(x) for x in (self.select_guidance or "").split(",") if x.strip()]
        except ValueError:
            ratios = [-1.0]
        if any(not r >= 0 for r in ratios) or len(set(ratios)) != len(ratios):
            raise UserError(f"select_guidance must be distinct comma-separated ratios >= 0 (e.g. 1,1.5,2), not "
                            f"{self.select_guidance!r}")
        return ratios

    @property
    def use_context_loss(self) -> bool:
        """§4.4: Eq. 2 on every concept token."""
        return self.method in ("lego", "cl-only", "reversion") and self.context_weight > 0

    # Settings that may change between a run and its --resume without changing what is being learned.
    RESUMABLE = ("steps", "checkpoint_every", "validate_every", "validation_steps", "validation_images",
                 "device", "log_every", "compile")

    def resolved(self, model_defaults: dict[str, Any]) -> InversionConfig:
        """This config with every model-dependent field left None filled from `model_defaults` (a model folder's
        lego_inversion.json), else from MODEL_DEFAULTS; a bad value there is a one-line UserError."""
        if self.method == "reversion" and self.timestep_skew is None:  # ReVersion's relation-focal sampling
            model_defaults = {**model_defaults, "timestep_skew": 0.5}
        values = {k: model_defaults.get(k, v) for k, v in MODEL_DEFAULTS.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **values) if values else self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InversionConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(sorted(names))}")
        return cls(**data)


def add_arguments(parser, cls) -> None:
    """Add a `--kebab-case` flag for every field of the dataclass `cls` (unless its metadata says `cli=False`):
    type from the annotation (`X | None` takes an X), help, choices and the default shown in the help from the
    field, so the command line and the config cannot drift apart. A field without a default is a required flag.
    Flags default to None, so `from_arguments` knows which ones were given."""
    import argparse
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        kind = hints[f.name]
        kind = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # X | None -> X
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        help_text = meta.get("help", "").replace("%", "%%")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if not required:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if default is not None:  # a None default is explained by the field's help
                help_text += f" (default: {('on' if default else 'off') if kind is bool else default})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                required=required, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None, required=required,
                                choices=meta.get("choices"), metavar=meta.get("metavar"), help=help_text)


def from_arguments(cls, args, **fixed: Any):
    """`cls(**given)` from parsed arguments: only the flags the user gave, the rest from the field defaults."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if f.metadata.get("cli", True) and getattr(args, f.name, None) is not None}
    return cls(**given, **fixed)


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

