"""Lego's optimisation (Eq. 3 of Lego, §4.5): <subj> and the concept tokens, learned together on a frozen model.

    from lego_inversion.trainer import invert
    from lego_inversion.config import InversionConfig
    out = invert("examples/melted_cube", "runs/melted", InversionConfig(method="lego", steps=400))

One step (all methods, parts switched off by `config.method`):
    subject batch  (I_C̄, "a photo of a <subj>")               -> L_inv  (Eq. 1)      [Subject Separation only]
    concept batch  (I_C,  "a photo of a <subj> that is <cpt>") -> L_inv  (Eq. 1)
    context loss   (each <cpt_i> vs its P_i, N_i)               -> λ·L_context (Eq. 2) [Context Loss only]
    contrast       (I_C̄, the concept batch's captions)          -> hinge vs L_inv of I_C̄ [contrast_weight > 0]
Both batches share one UNet call. <subj> also learns from I_C unless `subject_from_with=False`, in which case
it enters the concept batch as a constant (`subject_frozen_p`: in that fraction of the concept batch;
`subject_frozen_steps`: in the first K steps; `subject_frozen_above`: at high noise); with `subject_word_p` > 0
that fraction of the concept batch names the subject with its initializer word instead.
Only the new rows are trained; the model is never modified.

`InversionRun` is one run's state (rows, optimizer, random streams, outputs); the step and the loop that drive
one or many runs on one shared model are in `loop.py` (many folders/methods/seeds: `sweep.py`); the run folder's
checks, creation and resume are in `run_folder.py`. Output folder:
learned_embeds.safetensors, diffusers/, concept.json, config.json, checkpoint.safetensors, validation/, tensorboard/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from . import baselines
from .atomic import atomic_save_image, atomic_write_json
from .averaging import StepAverage
from .backbones import Backbone, load_backbone
from .backbones.tokens import words_to_rows
from .checkpoint import load_checkpoint, save_checkpoint
from .concept import ConceptSpec, load_concept
from .config import InversionConfig
from .errors import UserError
from .exemplars import ExemplarSet, caption_variants
from .formats import CONCEPT_FILE, EMBEDS_FILE, save_learned
from .images import make_grid
from .loop import forward, joint_step, lr_factor, train_runs
from .lexicon import check_words, with_context_words
from .losses import context_loss, contrast_loss, diffusion_loss, diffusion_target, min_snr_weights, sample_timesteps
from .run_folder import (CHECKPOINT_FILE, SELECTION_FILE, check_inputs, check_resume, open_run_folder,
                         prepare_out_dir)
from .selection import guidance_ratios, make_selector

DEFAULT_VALIDATION_SUBJECTS = ["teddy bear"]
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger(__name__)


@dataclass
class Draw:
    """One step's random draw for one run: clean latents, noise, timesteps, and which captions they go with."""
    latents: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    geometry: torch.Tensor                                   # [B, 4] original size and crop offset (CPU)
    groups: list[tuple[ExemplarSet, torch.Tensor, bool]]     # (set, caption rows, <subj> frozen) in sample order
    n_subject: int                                           # the first n samples are the subject batch
    n_contrast: int = 0                                      # the last n: the subject batch, concept-captioned


class InversionRun:
    """A prepared inversion: validated input, cached exemplars, new tokens, optimizer, random streams.

    `alias` renames tokens inside the shared model (several runs on one model all call their subject <subj>);
    everything written to the run folder uses the concept folder's own token names.
    """

    def __init__(self, spec: ConceptSpec, backbone: Backbone, config: InversionConfig, out_dir: Path,
                 alias: str = ""):
        if config.learning_rate is None:  # the model's default; config.json records the value used
            config = dataclasses.replace(config, learning_rate=backbone.default_learning_rate)
        self.select_by_given = config.select_by is not None  # else the model's default (selection.make_selector)
        guidance_given = bool(config.select_guidance)
        config = config.resolved(backbone.inversion_defaults)
        if config.use_context_loss:
            spec = with_context_words(spec, backbone)  # positives / negatives a concept leaves out, from WordNet
        spec = spec.with_vectors(config.vectors_per_token)
        self.spec, self.backbone, self.config, self.out_dir = spec, backbone, config, Path(out_dir)
        self.subject_token = spec.subject_token if config.subject_separation else None
        self.tokens = ([self.subject_token] if self.subject_token else []) + spec.tokens
        self.internal = {t: (f"{t[:-1]}~{alias}>" if t.endswith(">") else f"{t}~{alias}") if alias else t
                         for t in self.tokens}
        check_words(spec, backbone, config.use_context_loss)
        inits = [spec.subject_init] * bool(self.subject_token) + [c.init for c in spec.concepts]
        backbone.add_tokens([self.internal[t] for t in self.tokens], inits)
        self.subject_ids = backbone.token_ids([self.internal[self.subject_token]]) if self.subject_token else None
        self.concept_ids = backbone.token_ids([self.internal[t] for t in spec.tokens])
        self.resolution = config.resolution or backbone.resolution
        subject_text = self.internal[self.subject_token] if self.subject_token else spec.subject_init
        concept_text = " ".join(self.internal[t] for t in spec.tokens)

        def captions(kind: str, subject: str) -> list[list[str]]:  # each image's caption and its rewordings
            images = spec.with_images if kind == "with" else spec.without_images
            return [caption_variants(spec.caption(p, kind, subject, concept_text), config.caption_variants)
                    for p in images]

        self.with_set = ExemplarSet.build(backbone, spec.with_images, captions("with", subject_text), self.resolution,
                                          hues=config.hue_variants)
        self.without_set = ExemplarSet.build(backbone, spec.without_images, captions("without", subject_text),
                                             self.resolution, hues=config.hue_variants) if self.subject_token else None
        # subject_word_p: the with/ images again, captioned with the subject's word in place of <subj>
        self.word_set = self.with_set.recaptioned(backbone, captions("with", spec.subject_init)) \
            if self.subject_token and config.subject_word_p > 0 else None
        self.context_sets = self._context_sets() if config.use_context_loss else None
        ids = backbone.token_ids([self.internal[t] for t in self.tokens])
        self.params = {f"rows/{slot.name}": slot.ext.block(slot_ids) for slot, slot_ids in zip(backbone.slots, ids)}
        # fixed before any update: init_decay's anchor (the initial rows) and norm_cap's limits (from their norms)
        self.init_rows = {k: p.detach().clone() for k, p in self.params.items()} if config.init_decay else {}
        self.max_norms = {k: config.norm_cap * p.detach().norm(dim=-1, keepdim=True)
                          for k, p in self.params.items()} if config.norm_cap else {}
        cuda = backbone.device.type == "cuda"
        groups = baselines.attach(self)  # the fine-tuning baselines' UNet parts, if any
        self.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay,
                                           fused=True if cuda else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.steps, config.lr_warmup_steps, config.lr_schedule))
        self.amp_dtype = AMP_DTYPES.get(config.mixed_precision) if cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # Two streams: image/flip choices on the CPU (caption bookkeeping needs no device sync), noise and
        # timesteps on the model's device. Both are checkpointed, so a resumed run draws what it would have.
        self.generators = {"choices": torch.Generator().manual_seed(config.seed),
                           "noise": torch.Generator(backbone.device).manual_seed(config.seed + 0x9E3779B9)}
        self.loss_weights = min_snr_weights(backbone.noise_scheduler, config.snr_gamma).to(backbone.device) \
            if config.snr_gamma else None
        self.step = 0
        self.ema = StepAverage(self.params, config.ema_decay) if config.ema_decay else None
        # select_every: the best rows so far (the initializer's first), on the exemplars or by the look (selection.py)
        self.selector = make_selector(self)
        if config.rewind and self.selector is None:
            raise UserError(f"rewind {config.rewind} goes back to the rows selection kept, and this run selects none: "
                            "add --select-every K (and --select-by), or leave --rewind out")
        self.guidance_ratios, self.guidance_choice = guidance_ratios(self, guidance_given), None

    def autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()

    # -- preparation --------------------------------------------------------------------------------------------
    def _context_sets(self) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """Per text encoder: P_i and N_i as embedding rows, computed once (the table is frozen). ReVersion's steer
        loss takes the caption's nouns as N_i (baselines.steer_negatives)."""
        concepts = self.spec.concepts
        steer = baselines.steer_negatives(self) if self.config.method == "reversion" else None
        return [([words_to_rows(list(c.positives), slot.tokenizer, slot.base_table) for c in concepts],
                 [words_to_rows(list(steer or c.negatives), slot.tokenizer, slot.base_table) for c in concepts])
                for slot in self.backbone.slots]

    # -- one step: draw, losses (the UNet call is shared, in loop.py), update ---------------------------------
    def draw(self) -> Draw:
        """This step's samples: subject batch (Subject Separation) then concept batch, noise and timesteps."""
        cfg, g = self.config, self.generators
        latents, captions, geometry = self.with_set.sample(cfg.batch_size, g["choices"], g["noise"], cfg.flip_p)
        frozen = (not cfg.subject_from_with or self.step < cfg.subject_frozen_steps) and self.subject_token is not None
        groups = [(self.with_set, captions, frozen)]
        word = fixed = torch.zeros(len(captions), dtype=torch.bool)
        if self.word_set is not None:  # these samples name the subject in words
            word = torch.rand(len(captions), generator=g["choices"]) < cfg.subject_word_p
        if self.subject_token is not None and not frozen and cfg.subject_frozen_p > 0:  # <subj> a constant in these
            fixed = ~word & (torch.rand(len(captions), generator=g["choices"]) < cfg.subject_frozen_p)
        if word.any() or fixed.any():  # in the batch: <subj> learning, then <subj> constant, then the word
            free = ~word & ~fixed
            order = torch.cat([free.nonzero()[:, 0], fixed.nonzero()[:, 0], word.nonzero()[:, 0]])
            latents, geometry = latents[order.to(latents.device)], geometry[order]
            groups = [group for group in [(self.with_set, captions[free], frozen),
                                           (self.with_set, captions[fixed], True),
                                           (self.word_set, captions[word], False)] if group[1].numel()]
        n_subject = 0
        if self.without_set is not None:
            subj_latents, subj_captions, subj_geometry = self.without_set.sample(
                cfg.batch_size, g["choices"], g["noise"], cfg.flip_p)
            n_subject = subj_latents.shape[0]
            latents = torch.cat([subj_latents, latents])
            geometry = torch.cat([subj_geometry, geometry])
            groups.insert(0, (self.without_set, subj_captions, False))
        noise = torch.randn(latents.shape, generator=g["noise"], device=g["noise"].device).to(latents.device)
        steps = self.backbone.noise_scheduler.config.num_train_timesteps
        timesteps = sample_timesteps(latents.shape[0], steps, cfg.timestep_skew, g["noise"],
                                     cfg.timestep_min).to(latents.device)
        if cfg.subject_frozen_above < 1 and self.subject_token is not None and not frozen:  # regrouped by noise
            kinds = torch.cat([torch.full((len(c),), 2 if s is self.word_set else int(f)) for s, c, f in groups[1:]])
            caps = torch.cat([c for _, c, _ in groups[1:]])  # kinds: 0 <subj> learns, 1 <subj> constant, 2 the word
            kinds[(kinds == 0) & (timesteps[n_subject:] >= cfg.subject_frozen_above * steps).cpu()] = 1
            order = torch.cat([torch.arange(n_subject), n_subject + torch.argsort(kinds, stable=True)])
            latents, noise, timesteps, geometry = (x[order.to(x.device)] for x in (latents, noise, timesteps, geometry))
            groups[1:] = [(s, caps[kinds == k], k == 1) for k, s in enumerate([self.with_set] * 2 + [self.word_set])
                          if (kinds == k).any()]
        if cfg.contrast_weight and n_subject:  # contrast_loss's negatives: the subject batch again, same ε and t
            latents, noise, timesteps, geometry = (torch.cat([x, x[:n_subject]])
                                                   for x in (latents, noise, timesteps, geometry))
            groups.append((self.with_set, captions, True))
        return Draw(latents, noise, timesteps, geometry, groups, n_subject, n_subject * bool(cfg.contrast_weight))

    def loss_terms(self, prediction: torch.Tensor, draw: Draw) -> dict[str, torch.Tensor]:
        """Loss terms of one step (Eq. 3) from this run's slice of the UNet output; 'loss' is their total."""
        cfg, bb = self.config, self.backbone
        target = diffusion_target(bb.noise_scheduler, draw.latents, draw.noise, draw.timesteps)
        per_sample = diffusion_loss(prediction, target)
        if self.loss_weights is not None:  # Min-SNR-γ
            per_sample = per_sample * self.loss_weights[draw.timesteps]
        end = per_sample.shape[0] - draw.n_contrast
        terms = {"loss_concept": per_sample[draw.n_subject:end].mean()}
        warming_up = draw.n_subject and self.step < cfg.subject_warmup  # <subj> alone learns, from without/
        total = 0.0 if warming_up else terms["loss_concept"]
        if draw.n_subject:
            terms["loss_subject"] = per_sample[:draw.n_subject].mean()
            total = total + terms["loss_subject"]
        if draw.n_contrast and not warming_up:
            terms["loss_contrast"] = contrast_loss(per_sample[end:], per_sample[:draw.n_subject], cfg.contrast_margin)
            total = total + cfg.contrast_weight * terms["loss_contrast"]
        if self.context_sets is not None and not warming_up:
            sets = baselines.steer_positives(self, self.context_sets) if cfg.method == "reversion" \
                else self.context_sets
            ctx = sum(slot.context_weight * context_loss(slot.ext.rows(ids), pos, neg, cfg.temperature,
                                                         cfg.context_similarity)
                      for slot, ids, (pos, neg) in zip(bb.slots, self.concept_ids, sets))
            terms["loss_context"] = ctx
            total = total + cfg.context_weight * ctx
        terms["loss"] = total
        return terms

    def update(self) -> None:
        """Optimizer step on this run's rows (gradients already back-propagated), then the next step."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            # decoupled decay toward the initializer (L2-SP), as AdamW decays toward 0; lr: this step's, the rows'
            pull = min(1.0, self.config.init_decay * self.optimizer.param_groups[0]["lr"])
            for key, init in self.init_rows.items():
                self.params[key].sub_(pull * (self.params[key] - init))
            for key, limit in self.max_norms.items():
                rows = self.params[key]
                rows.mul_((limit / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0))
        if self.ema is not None:
            self.ema.update(self.params)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    @torch.no_grad()
    def rewind(self) -> None:
        """Go back to the rows selection kept (`rewind`): they become the current rows, and the optimizer forgets
        its moments (a walk from the best point starts afresh; the learning-rate schedule and the random streams go
        on, so the next draws differ from those that followed the kept step)."""
        self.selector.restore(self)
        self.optimizer.state.clear()  # only learned rows are optimized here: rewind refuses UNet fine-tuning

    def kept_rows(self):
        """A block in which the rows are the ones selection scores and the results keep: the step average
        (`ema_decay`), else the current rows."""
        return self.ema.applied(self.params, self.step) if self.ema is not None else contextlib.nullcontext()

    def losses(self) -> dict[str, torch.Tensor]:
        """Loss terms of one fresh draw, with their graph (no update): what a step would back-propagate."""
        return forward([self])[0]

    def train_step(self) -> dict[str, float]:
        """One step of this run alone (the same code path as a joint step of many runs)."""
        return {k: float(v) for k, v in joint_step([self])[0].items()}

    # -- outputs --------------------------------------------------------------------------------------------
    def metadata(self) -> dict:
        return {"base_model": self.backbone.model_id, "backbone": self.backbone.kind, "method": self.config.method,
                "config": self.config.to_dict(), "concept": self.spec.to_json(), "tokens": self.spec.tokens,
                "subject_token": self.subject_token, "slots": [s.name for s in self.backbone.slots],
                "step": self.step, "selected_step": self.selector.best_step if self.selector else None,
                "selected_score": self.selector.best_score if self.selector else None,
                "concept_guidance_ratio": self.guidance_choice["chosen"] if self.guidance_choice else None}

    def concept_json(self) -> dict:
        spec = self.spec
        return {"name": spec.name, "method": self.config.method, "tokens": spec.tokens,
                "subject_token": self.subject_token, "description": spec.description, "prompts": spec.prompts,
                "subject_init": spec.subject_init, "evaluation": {"questions": spec.evaluation.get("questions", []),
                                                                  "count": spec.evaluation.get("count"),
                                                                  "targets": spec.evaluation.get("targets", [])},
                "validation": spec.validation, "toyworld": spec.toyworld, "fingerprint": spec.fingerprint(),
                "context_words": {c.token: {"positives": list(c.positives), "negatives": list(c.negatives),
                                            "suggested": list(c.suggested)} for c in spec.concepts}
                if self.config.use_context_loss else None,
                "reference_images": spec.to_json()["reference_images"], "base_model": self.backbone.model_id,
                "backbone": self.backbone.kind, "slots": [s.name for s in self.backbone.slots], "step": self.step}

    def concept_prompts(self, subjects: list[str]) -> list[str]:
        """The concept on each subject, with this run's tokens as the shared model knows them."""
        return self.spec.concept_prompts(" ".join(self.internal[t] for t in self.spec.tokens), subjects)

    def validation_prompts(self) -> list[str]:
        """Prompts of the validation grid: the concept on the validation subjects in turn."""
        subjects = self.spec.validation.get("subjects") or DEFAULT_VALIDATION_SUBJECTS
        return self.concept_prompts([subjects[i % len(subjects)] for i in range(self.config.validation_images)])

    @torch.no_grad()
    def validate(self, writer=None) -> Path:
        """A grid applying the concept to new subjects, with fixed seeds so grids are comparable over steps."""
        bb = self.backbone
        prompts = self.validation_prompts()
        latents = torch.cat([torch.randn(bb.latent_shape(1, self.resolution), generator=torch.Generator()
                                         .manual_seed(1000 + i)) for i in range(len(prompts))])
        with self.autocast():
            images = bb.sample(prompts, latents, num_inference_steps=self.config.validation_steps)
        grid = make_grid(images, cols=min(4, len(images)))
        path = atomic_save_image(self.out_dir / "validation" / f"step_{self.step:06d}.png", grid)
        if writer is not None:
            import numpy as np

            writer.add_image("validation", np.asarray(grid), self.step, dataformats="HWC")
        return path

    @property
    def checkpointed(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint holds besides the optimizer's: the rows, the selector's best rows, the average."""
        return self.params | (self.selector.state if self.selector else {}) | (self.ema.state if self.ema else {})

    def save_checkpoint(self) -> None:
        save_checkpoint(self.out_dir / CHECKPOINT_FILE, self.step, self.checkpointed, self.optimizer, self.scheduler,
                        self.generators, self.scaler)

    def load_checkpoint(self) -> None:
        self.step = load_checkpoint(self.out_dir / CHECKPOINT_FILE, self.checkpointed, self.optimizer,
                                    self.scheduler, self.generators, self.scaler)

    def save_results(self) -> None:
        if self.selector is not None:  # the best rows (or the mean of the K best), not the last
            self.selector.restore_kept(self)
        elif self.ema is not None:
            self.ema.copy_to(self.params, self.step)
        if self.guidance_ratios:
            self.guidance_choice = self.selector.choose_guidance(self, self.guidance_ratios)
        vectors = self.backbone.token_vectors([self.internal[t] for t in self.tokens])
        save_learned(self.out_dir, {t: vectors[self.internal[t]] for t in self.tokens},
                     [s.name for s in self.backbone.slots], self.metadata())
        baselines.save(self)
        atomic_write_json(self.out_dir / CONCEPT_FILE, self.concept_json())
        if self.selector is not None:
            atomic_write_json(self.out_dir / SELECTION_FILE, {"select_by": self.config.select_by,
                                                              "step": self.selector.best_step,
                                                              "score": self.selector.best_score,
                                                              "kept_steps": self.selector.kept_steps}
                              | ({"guidance": self.guidance_choice} if self.guidance_choice else {}))

    @property
    def finished(self) -> bool:
        return self.step >= self.config.steps

    def run(self, progress: bool = True) -> Path:
        train_runs([self], progress=progress)
        return self.out_dir


def build_run(concept_dir: str | Path, out_dir: str | Path, config: InversionConfig, backbone: Backbone,
              resume: bool = False, alias: str = "") -> tuple[InversionRun, InversionConfig | None]:
    """Validate a concept folder and OUT_DIR against the model and build the run; writes nothing. Returns the
    run and, when resuming, the saved config."""
    out_dir = Path(out_dir)
    spec = load_concept(concept_dir, require_without=config.subject_separation)
    previous = prepare_out_dir(out_dir, resume)
    run = InversionRun(spec, backbone, config, out_dir, alias=alias)
    if previous is not None:
        check_resume(out_dir, previous, run)
    return run, previous


def load_training_backbone(model: str | None, config: InversionConfig, allow_pickle: bool = False) -> Backbone:
    """The frozen model for training: on CUDA with mixed precision its weights are stored in that dtype (no cast
    on every call; the learned rows stay fp32), channels-last, and compiled if asked."""
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = config.mixed_precision if device.startswith("cuda") and config.mixed_precision != "no" else "float32"
    backbone = load_backbone(model, device=device, dtype=dtype, allow_pickle=allow_pickle)
    backbone.prepare_training(compile=config.compile)
    return backbone


def invert(concept_dir: str | Path, out_dir: str | Path, config: InversionConfig | None = None,
           model: str | None = None, backbone: Backbone | None = None, resume: bool = False,
           allow_pickle: bool = False, progress: bool = True) -> Path:
    """Learn a concept folder's tokens (Eq. 3) and write the run folder; returns it.

    Everything that can be wrong with the input is checked before OUT_DIR is created.
    """
    config = config or InversionConfig()
    out_dir = Path(out_dir)
    check_inputs(concept_dir, out_dir, config, resume)
    if backbone is None:
        backbone = load_training_backbone(model, config, allow_pickle=allow_pickle)
    run, previous = build_run(concept_dir, out_dir, config, backbone, resume=resume)
    try:
        open_run_folder(run, previous)
        if run.finished and (out_dir / EMBEDS_FILE).is_file():
            return out_dir
        return run.run(progress=progress)
    finally:
        baselines.detach(run)  # a fine-tuning run's UNet parts are on disk; the backbone goes back to its base
