"""Lego's optimisation (Eq. 3 of Lego, §4.5): <subj> and the concept tokens, learned together on a frozen model.

    from lego_inversion.trainer import invert
    from lego_inversion.config import InversionConfig
    out = invert("examples/melted_cube", "runs/melted", InversionConfig(method="lego", steps=400))

One step (all methods, parts switched off by `config.method`):
    subject batch  (I_C̄, "a photo of a <subj>")               -> L_inv  (Eq. 1)      [Subject Separation only]
    concept batch  (I_C,  "a photo of a <subj> that is <cpt>") -> L_inv  (Eq. 1)
    context loss   (each <cpt_i> vs its P_i, N_i)               -> λ·L_context (Eq. 2) [Context Loss only]
Both batches share one UNet call. <subj> also learns from I_C unless `subject_from_with=False`, in which case
it enters the concept batch as a constant. Only the new rows are trained; the model is never modified.

Output folder: learned_embeds.safetensors, diffusers/, concept.json, config.json, checkpoint.safetensors,
validation/*.png, tensorboard/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .atomic import atomic_save_image, atomic_write_json
from .backbones import Backbone, load_backbone
from .checkpoint import load_checkpoint, save_checkpoint
from .concept import ConceptSpec, load_concept
from .config import InversionConfig
from .documents import read_document
from .exemplars import ExemplarSet
from .errors import UserError
from .formats import CONCEPT_FILE, EMBEDS_FILE, save_learned
from .images import make_grid
from .backbones.tokens import words_to_rows
from .losses import context_loss, diffusion_loss, diffusion_target

CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_VALIDATION_SUBJECTS = ["teddy bear"]


class InversionRun:
    """A prepared inversion: validated input, cached exemplars, new tokens, optimizer. `run()` trains it."""

    def __init__(self, spec: ConceptSpec, backbone: Backbone, config: InversionConfig, out_dir: Path):
        if config.learning_rate is None:  # the model's default; config.json records the value used
            config = dataclasses.replace(config, learning_rate=backbone.default_learning_rate)
        self.spec, self.backbone, self.config, self.out_dir = spec, backbone, config, Path(out_dir)
        self.subject_token = spec.subject_token if config.subject_separation else None
        self.tokens = ([self.subject_token] if self.subject_token else []) + spec.tokens
        self._check_words()
        inits = [spec.subject_init] * bool(self.subject_token) + [c.init for c in spec.concepts]
        backbone.add_tokens(self.tokens, inits)
        self.subject_ids = backbone.token_ids([self.subject_token]) if self.subject_token else None
        self.concept_ids = backbone.token_ids(spec.tokens)
        self.resolution = config.resolution or backbone.resolution
        subject_text = self.subject_token or spec.subject_init
        self.with_set = ExemplarSet.build(
            backbone, spec.with_images, [spec.caption(p, "with", subject_text) for p in spec.with_images],
            self.resolution)
        self.without_set = ExemplarSet.build(
            backbone, spec.without_images, [spec.caption(p, "without", subject_text) for p in spec.without_images],
            self.resolution) if self.subject_token else None
        self.context_sets = self._context_sets() if config.use_context_loss else None
        self.params = {f"rows/{slot.name}": slot.ext.extra for slot in backbone.slots}
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        warmup = config.lr_warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        device = backbone.device
        use_amp = device.type == "cuda" and config.mixed_precision != "no"
        amp_dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16
        self._autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else contextlib.nullcontext

    # -- preparation --------------------------------------------------------------------------------------------
    def _check_words(self) -> None:
        """Every init / positive / negative word must embed; say which field is wrong if not."""
        where = self.spec.root / "concept.toml"
        fields = [("subject.init", [self.spec.subject_init])]
        for i, c in enumerate(self.spec.concepts):
            fields.append((f"concept[{i}].init", [c.init]))
            if self.config.use_context_loss:
                fields += [(f"concept[{i}].positives", list(c.positives)),
                           (f"concept[{i}].negatives", list(c.negatives))]
        for slot in self.backbone.slots:
            for field_name, words in fields:
                try:
                    words_to_rows(words, slot.tokenizer, slot.base_table)
                except ValueError as exc:
                    raise UserError(f"{where}: {field_name}: {exc}; use other words") from None

    def _context_sets(self) -> list[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """Per text encoder: P_i and N_i as embedding rows, computed once (the table is frozen)."""
        sets = []
        for slot in self.backbone.slots:
            pos = [words_to_rows(list(c.positives), slot.tokenizer, slot.base_table) for c in self.spec.concepts]
            neg = [words_to_rows(list(c.negatives), slot.tokenizer, slot.base_table) for c in self.spec.concepts]
            sets.append((pos, neg))
        return sets

    # -- one optimisation step --------------------------------------------------------------------------------
    def conditioning(self, batches: list[tuple[ExemplarSet, torch.Tensor]], frozen_ids=None) -> dict:
        """UNet conditioning for sampled images: each distinct caption goes through the text encoder once.

        `batches` pairs an exemplar set with the caption rows of its samples; the result is in that order.
        Identical captions give identical encodings, so gathering them is exact (gradients add up as they would).
        """
        offset, rows = 0, []
        for exemplars, captions in batches:
            rows.append(captions + offset)
            offset += exemplars.ids[0].shape[0]
        needed, inverse = torch.unique(torch.cat(rows), return_inverse=True)
        ids = [torch.cat([exemplars.ids[s] for exemplars, _ in batches]) for s in range(len(self.backbone.slots))]
        cond = self.backbone.encode_text([slot_ids[needed.to(slot_ids.device)] for slot_ids in ids], frozen_ids)
        return {k: v[inverse.to(v.device)] for k, v in cond.items()}

    def losses(self) -> dict[str, torch.Tensor]:
        """Loss terms of one step (Eq. 3); 'loss' is the total that is back-propagated."""
        cfg, bb, g = self.config, self.backbone, self.generator
        latents, captions = self.with_set.sample(cfg.batch_size, g, cfg.flip_p)
        n_subject = 0
        if self.without_set is None:
            cond = self.conditioning([(self.with_set, captions)])
        else:
            subj_latents, subj_captions = self.without_set.sample(cfg.batch_size, g, cfg.flip_p)
            n_subject = subj_latents.shape[0]
            latents = torch.cat([subj_latents, latents])
            if cfg.subject_from_with:  # one text-encoder call for both batches
                cond = self.conditioning([(self.without_set, subj_captions), (self.with_set, captions)])
            else:  # <subj> enters the concept batch as a constant (§4.3 variant)
                conds = [self.conditioning([(self.without_set, subj_captions)]),
                         self.conditioning([(self.with_set, captions)], frozen_ids=self.subject_ids)]
                cond = {k: torch.cat([c[k] for c in conds]) for k in conds[0]}
        noise = torch.randn(latents.shape, generator=g).to(latents.device)
        timesteps = torch.randint(bb.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  generator=g).to(latents.device)
        noisy = bb.noise_scheduler.add_noise(latents, noise, timesteps)
        with self._autocast():
            prediction = bb.predict(noisy, timesteps, cond)
        per_sample = diffusion_loss(prediction, diffusion_target(bb.noise_scheduler, latents, noise, timesteps))
        terms = {"loss_concept": per_sample[n_subject:].mean()}
        total = terms["loss_concept"]
        if n_subject:
            terms["loss_subject"] = per_sample[:n_subject].mean()
            total = total + terms["loss_subject"]
        if self.context_sets is not None:
            ctx = sum(slot.context_weight * context_loss(slot.ext.rows(ids), pos, neg, cfg.temperature)
                      for slot, ids, (pos, neg) in zip(bb.slots, self.concept_ids, self.context_sets))
            terms["loss_context"] = ctx
            total = total + cfg.context_weight * ctx
        terms["loss"] = total
        return terms

    def train_step(self) -> dict[str, float]:
        terms = self.losses()
        terms["loss"].backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    # -- outputs --------------------------------------------------------------------------------------------
    def metadata(self) -> dict:
        return {"base_model": self.backbone.model_id, "backbone": self.backbone.kind, "method": self.config.method,
                "config": self.config.to_dict(), "concept": self.spec.to_json(), "tokens": self.spec.tokens,
                "subject_token": self.subject_token, "slots": [s.name for s in self.backbone.slots],
                "step": self.step}

    def concept_json(self) -> dict:
        spec = self.spec
        return {"name": spec.name, "method": self.config.method, "tokens": spec.tokens,
                "subject_token": self.subject_token, "description": spec.description, "prompts": spec.prompts,
                "subject_init": spec.subject_init, "evaluation": {"questions": spec.evaluation.get("questions", []),
                                                                  "count": spec.evaluation.get("count"),
                                                                  "targets": spec.evaluation.get("targets", [])},
                "validation": spec.validation, "toyworld": spec.toyworld,
                "reference_images": spec.to_json()["reference_images"], "base_model": self.backbone.model_id,
                "backbone": self.backbone.kind, "slots": [s.name for s in self.backbone.slots], "step": self.step}

    def validation_prompts(self) -> list[str]:
        subjects = self.spec.validation.get("subjects") or DEFAULT_VALIDATION_SUBJECTS
        template = self.spec.validation.get("prompt") or self.spec.prompts["with"]
        n = self.config.validation_images
        return [template.format(subject=subjects[i % len(subjects)], concept=" ".join(self.spec.tokens))
                for i in range(n)]

    @torch.no_grad()
    def validate(self, writer=None) -> Path:
        """A grid applying the concept to new subjects, with fixed seeds so grids are comparable over steps."""
        bb = self.backbone
        prompts = self.validation_prompts()
        latents = torch.cat([torch.randn(bb.latent_shape(1, self.resolution), generator=torch.Generator()
                                         .manual_seed(1000 + i)) for i in range(len(prompts))])
        with self._autocast():
            images = bb.sample(prompts, latents, num_inference_steps=self.config.validation_steps)
        grid = make_grid(images, cols=min(4, len(images)))
        path = atomic_save_image(self.out_dir / "validation" / f"step_{self.step:06d}.png", grid)
        if writer is not None:
            import numpy as np

            writer.add_image("validation", np.asarray(grid), self.step, dataformats="HWC")
        return path

    def save_checkpoint(self) -> None:
        save_checkpoint(self.out_dir / CHECKPOINT_FILE, self.step, self.params, self.optimizer, self.scheduler,
                        self.generator)

    def save_results(self) -> None:
        save_learned(self.out_dir, self.backbone.token_vectors(self.tokens), [s.name for s in self.backbone.slots],
                     self.metadata())
        atomic_write_json(self.out_dir / CONCEPT_FILE, self.concept_json())

    # -- the loop ------------------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> Path:
        cfg = self.config
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.step or None)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, desc=f"lego invert ({cfg.method})",
                   dynamic_ncols=True)
        try:
            while self.step < cfg.steps:
                terms = self.train_step()
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    bar.set_postfix({k.replace("loss_", ""): f"{v:.4f}" for k, v in terms.items()})
                    for k, v in terms.items():
                        writer.add_scalar(f"train/{k}", v, self.step)
                    writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
                if self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if cfg.validate_every and self.step % cfg.validate_every == 0 and self.step < cfg.steps:
                    self.validate(writer)
        except KeyboardInterrupt:
            self.save_checkpoint()
            bar.close()
            writer.close()
            raise
        bar.close()
        self.save_checkpoint()
        self.save_results()
        self.validate(writer)
        writer.close()
        return self.out_dir


def _prepare_out_dir(out_dir: Path, resume: bool) -> InversionConfig | None:
    """Check OUT_DIR before anything is written; returns the saved config of the run to resume, if any."""
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return None
    if not resume:
        raise UserError(f"{out_dir}: folder exists and is not empty; pass --resume to continue that run or "
                        "choose a new --out")
    saved = read_document(out_dir / CONFIG_FILE, missing="not a lego invert run; choose a new --out",
                          fix="choose a new --out")
    return InversionConfig.from_dict(saved)


def _check_resume_settings(out_dir: Path, previous: InversionConfig, config: InversionConfig) -> None:
    """`config` (with the model's defaults resolved) may differ from the saved run only in RESUMABLE fields."""
    before = previous.to_dict()
    changed = [k for k, v in config.to_dict().items() if k not in InversionConfig.RESUMABLE and before.get(k) != v]
    if changed:
        raise UserError(f"{out_dir / CONFIG_FILE}: --resume with different settings ({', '.join(changed)}); use "
                        "the run's settings or a new --out")


def invert(concept_dir: str | Path, out_dir: str | Path, config: InversionConfig | None = None,
           model: str | None = None, backbone: Backbone | None = None, resume: bool = False,
           allow_pickle: bool = False, progress: bool = True) -> Path:
    """Learn a concept folder's tokens (Eq. 3) and write the run folder; returns it.

    Everything that can be wrong with the input is checked before OUT_DIR is created.
    """
    config = config or InversionConfig()
    out_dir = Path(out_dir)
    spec = load_concept(concept_dir, require_without=config.subject_separation)
    if config.use_context_loss:
        spec.check_context_words()
    previous = _prepare_out_dir(out_dir, resume)
    if backbone is None:
        backbone = load_backbone(model, device=config.device, allow_pickle=allow_pickle)
    run = InversionRun(spec, backbone, config, out_dir)
    config = run.config  # model-dependent defaults (learning rate) resolved
    if previous is not None:
        _check_resume_settings(out_dir, previous, config)
    resuming = previous is not None and (out_dir / CHECKPOINT_FILE).is_file()
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / CONFIG_FILE, config.to_dict())
        if resuming:
            run.step = load_checkpoint(out_dir / CHECKPOINT_FILE, run.params, run.optimizer, run.scheduler,
                                       run.generator)
        atomic_write_json(out_dir / CONCEPT_FILE, run.concept_json())
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if run.step >= config.steps and (out_dir / EMBEDS_FILE).is_file():
        return out_dir
    return run.run(progress=progress)
