"""Keeping the best rows of a run (`select_every`), scored on its own exemplars or by its look on other subjects.

    selector = make_selector(run)        # ExemplarSelector or LookSelector (`select_by`); scores the initial rows
    selector.offer(run)                  # score the current rows; keep a copy if they beat the best so far
    selector.restore(run)                # put the best rows back (`rewind`)
    selector.restore_kept(run)           # put back what the results keep: the best rows, or with `select_average`
                                         # K > 1 the mean of the K best-scored ones (the trainer, before saving)
    selector.trails_by(score)            # how far an offered score is behind the best (`rewind`, loop.py)
    selector.guidance_scores(run, [1, 1.5, 2])   # LookSelector: the kept rows judged at each concept guidance ratio

`select_by = "exemplars"` (ExemplarSelector): the denoising part of Eq. 3 (concept batch + subject batch) on fixed
draws of the run's own exemplars (the same images, flips, t and ε each time: common random numbers); lower is
better. Why: late in training the gradient on a learned row is almost all noise (2-5 % signal on the toy model at
400 steps), so the last iterate is where a walk stopped. Measured on the toy model (docs/inversion_quality.md (g))
it ties the last rows: the best-scored rows came from steps 300-400 in every run.

`select_by = "look"` (LookSelector): the rows generate the concept on the `select_subjects` (never the exemplar's
subject) from fixed noise, `select_images` per subject, and a judge scores each image (judges.py: the toy world's
oracle, or BLIP-2 yes/no VQA on the concept's questions); higher is better, and a tie goes to the later rows.
Why: what a user wants is the look on *new* subjects, and training can carry rows off a look their initializer
already draws (waving on the toy model, (g)) or end on an unlucky iterate ((m)). The noise does not depend on the
run's seed, so runs of several seeds are scored on the same images' noise and their best scores compare
(`lego invert --seed 0 1 2` then keeps the best run as `<concept>-<method>-best`, sweep.keep_best).

With `select_floor` f > 0 the judged images are drawn with generation's concept floor f (guidance.py: no concept
tokens below f·T), so a run is judged on the images `lego generate --concept-floor f` would draw from its rows.

With `select_guidance` (a LookSelector only), the rows the results keep are judged once more at the end, at each
concept guidance ratio r (generation's `--concept-guidance-scale` r·s, s the model's guidance scale; guidance.py),
on fresh noise (`LOOK_SEED + GUIDANCE_NOISE + i`: on selection's own noise the kept rows are the best of several
scorings at r = 1, which would favour it); the best ratio (ties: the lower) is recorded with the rows, and generation
uses it by default for this concept. Why: how strongly a learned look must be guided differs by concept
(docs/inversion_quality.md (ai): the frozen look gains at 1.5-2, waving loses).

With `rewind` d > 0, an offer that trails the best by at least d sends training back to the best rows
(trainer.InversionRun.rewind): the walk of the remaining steps starts again from the best point, with fresh Adam
moments and the run's next draws, rather than going on from a worse one.

With `select_average` K > 1 the selector also keeps the K best-scored rows offered (ties: the later rows), and the
results hold their mean: a uniform soup of one run's checkpoints (Wortsman et al., ICML 2022; across seeds,
averaging.py). Why: the best look score leads the next one by less than one judged image in most runs
(docs/inversion_quality.md (aj)), so which checkpoint is "best" is partly the judge's noise.

The best rows, their score and step (and the K kept) travel in the checkpoint, so a resumed run selects as an
uninterrupted one.
Only learned rows are kept: methods that fine-tune the UNet do not select.
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch

from .errors import UserError
from .guidance import concept_free_prompts, concept_guidance

logger = logging.getLogger(__name__)

SELECT_STREAM = 0x5E1EC7  # offset of the selection draws' seeds from the run's seed
LOOK_SEED = 0x100C  # first noise seed of the look images (image i: LOOK_SEED + i, whatever the run's seed)
GUIDANCE_NOISE = 10_000  # offset of the guidance choice's noise seeds from LOOK_SEED


def look_latents(backbone, count: int, resolution: int, offset: int = 0) -> torch.Tensor:
    """The judged images' initial noise: image i from seed LOOK_SEED + offset + i alone."""
    shape = backbone.latent_shape(1, resolution)
    return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(LOOK_SEED + offset + i))
                      for i in range(count)])


def judged_guidance(backbone, free_prompts: list[str], ratio: float = 1.0, floor: float = 0.0):
    """The context the judged images are drawn in: the concept term at `ratio` times the model's guidance scale and
    no concept tokens below `floor` · T (guidance.py); plain guidance (no hook) at ratio 1, floor 0."""
    if ratio == 1 and floor == 0:
        return contextlib.nullcontext()
    scale = backbone.default_guidance_scale
    return concept_guidance(backbone, free_prompts, scale, ratio * scale, floor)


def judge_guidance(backbone, judge, prompts: list[str], free_prompts: list[str], subjects: list[str],
                   latents: torch.Tensor, ratios: list[float], steps: int, floor: float = 0.0) -> list[float]:
    """The judge's mean score of `prompts` drawn from `latents` at each concept guidance ratio r (the concept term
    at r times the model's guidance scale; r = 1 is plain guidance) and concept floor `floor`; `free_prompts`: the
    prompts without the concept tokens."""
    out = []
    for ratio in ratios:
        with judged_guidance(backbone, free_prompts, ratio, floor):
            images = backbone.sample(prompts, latents, num_inference_steps=steps)
        out.append(sum(judge(images, subjects)) / len(images))
    return out


def best_ratio(ratios: list[float], scores: list[float]) -> float:
    """The ratio with the best score; ties go to the lower ratio (the weaker departure from plain guidance)."""
    return min((r for r, v in zip(ratios, scores) if v == max(scores)))


class Selector:
    """The best rows offered so far and their score, as checkpointed tensors; subclasses define `score`."""

    higher_is_better = False

    def __init__(self, run, average: int = 1):
        worst = -math.inf if self.higher_is_better else math.inf
        self.average = average
        self.state = {"select/score": torch.tensor([worst]), "select/step": torch.tensor([-1.0])}
        self.state |= {f"select/{k}": p.detach().clone() for k, p in run.params.items()}
        if average > 1:  # the K best (`select_average`); the best alone stays in the keys above
            self.state |= {"select/pool/score": torch.full([average], worst),
                           "select/pool/step": torch.full([average], -1.0)}
            self.state |= {f"select/pool/{k}": p.detach().clone().expand(average, *p.shape).clone()
                           for k, p in run.params.items()}
        self.offer(run)  # the initializer is a candidate too

    @property
    def best_step(self) -> int:
        return int(self.state["select/step"])

    @property
    def best_score(self) -> float:
        return float(self.state["select/score"])

    def score(self, run) -> float:
        raise NotImplementedError

    def beats(self, score: float, other: float) -> bool:
        """Lower losses win outright (ties keep the earlier rows); higher looks win ties (the later rows)."""
        return score >= other if self.higher_is_better else score < other

    def beats_best(self, score: float) -> bool:
        return self.beats(score, self.best_score)

    def trails_by(self, score: float) -> float:
        """How far `score` is behind the best so far (>= 0; 0 when it is the best)."""
        return self.best_score - score if self.higher_is_better else score - self.best_score

    def offer(self, run) -> float:
        """Score the current rows and keep them if they are the best so far; returns the score."""
        score = self.score(run)
        if self.beats_best(score):
            self.state["select/score"].fill_(score)
            self.state["select/step"].fill_(run.step)
            for k, p in run.params.items():
                self.state[f"select/{k}"].copy_(p.detach())
        if self.average > 1:
            self._pool(run, score)
        return score

    def _pool(self, run, score: float) -> None:
        """Put the rows among the K kept: in an empty slot, else in place of the worst kept if they beat it (among
        equally worst rows, the one a tie would lose: the earliest for looks, the latest for losses)."""
        scores, steps = self.state["select/pool/score"], self.state["select/pool/step"]
        empty = (steps < 0).nonzero()
        if len(empty):
            slot = int(empty[0])
        else:
            worst = scores.min() if self.higher_is_better else scores.max()
            tied = (scores == worst).nonzero().flatten()
            slot = int(tied[steps[tied].argmin() if self.higher_is_better else steps[tied].argmax()])
            if not self.beats(score, float(worst)):
                return
        scores[slot], steps[slot] = score, run.step
        for k, p in run.params.items():
            self.state[f"select/pool/{k}"][slot].copy_(p.detach())

    @property
    def kept_steps(self) -> list[int]:
        """The steps whose rows the results hold, in order."""
        if self.average == 1:
            return [self.best_step]
        return sorted(int(s) for s in self.state["select/pool/step"] if s >= 0)

    @torch.no_grad()
    def restore(self, run) -> None:
        for k, p in run.params.items():
            p.copy_(self.state[f"select/{k}"])

    @torch.no_grad()
    def restore_kept(self, run) -> None:
        """The rows the results hold: the best, or the mean of the K best-scored (`select_average`)."""
        if self.average == 1:
            return self.restore(run)
        filled = self.state["select/pool/step"] >= 0
        for k, p in run.params.items():
            p.copy_(self.state[f"select/pool/{k}"][filled].mean(0))


class ExemplarSelector(Selector):
    def __init__(self, run, draws: int, average: int = 1):
        seed, device = run.config.seed + SELECT_STREAM, run.backbone.device
        own = {"choices": torch.Generator().manual_seed(seed), "noise": torch.Generator(device).manual_seed(seed)}
        training, run.generators = run.generators, own
        try:
            self.draws = [run.draw() for _ in range(draws)]
        finally:
            run.generators = training
        super().__init__(run, average)

    @torch.no_grad()
    def score(self, run) -> float:
        """Mean denoising loss (Eq. 3 without the Context Loss) of the run's current rows on the fixed draws."""
        from .loop import forward

        total = 0.0
        for draw in self.draws:
            terms = forward([run], [draw])[0]
            total += float(terms["loss_concept"] + terms.get("loss_subject", 0.0))
        return total / len(self.draws)


class LookSelector(Selector):
    """Mean judge score of the concept drawn on the select subjects, from fixed noise (module docstring)."""

    higher_is_better = True

    def __init__(self, run, judge, subjects: list[str], images: int, average: int = 1):
        self.judge, self.subjects = judge, [s for s in subjects for _ in range(images)]
        self.prompts = run.concept_prompts(self.subjects)
        self.free = concept_free_prompts(self.prompts, [run.internal[t] for t in run.spec.tokens])
        self.latents = look_latents(run.backbone, len(self.prompts), run.resolution)
        super().__init__(run, average)

    @torch.no_grad()
    def score(self, run) -> float:
        with run.autocast(), judged_guidance(run.backbone, self.free, floor=run.config.select_floor):
            images = run.backbone.sample(self.prompts, self.latents, num_inference_steps=run.config.select_steps)
        return sum(self.judge(images, self.subjects)) / len(images)

    def choose_guidance(self, run, ratios: list[float]) -> dict:
        """`select_guidance`: {"ratios", "scores", "chosen"}, the run's current rows judged at each ratio and the
        best."""
        scores = self.guidance_scores(run, ratios)
        return {"ratios": list(ratios), "scores": scores, "chosen": best_ratio(ratios, scores)}

    @torch.no_grad()
    def guidance_scores(self, run, ratios: list[float]) -> list[float]:
        """The run's current rows judged at each concept guidance ratio, on fresh noise (module docstring)."""
        latents = look_latents(run.backbone, len(self.prompts), run.resolution, GUIDANCE_NOISE)
        with run.autocast():
            return judge_guidance(run.backbone, self.judge, self.prompts, self.free, self.subjects, latents, ratios,
                                  run.config.select_steps, run.config.select_floor)


def look_subjects(spec, config) -> list[str]:
    """select_by look: `select_subjects`, else the concept's validation subjects, without the exemplar's."""
    from .trainer import DEFAULT_VALIDATION_SUBJECTS

    given = [s.strip() for s in (config.select_subjects or "").split(",") if s.strip()]
    subjects = given or list(spec.validation.get("subjects") or DEFAULT_VALIDATION_SUBJECTS)
    own = {str(spec.subject_init).lower(), str(spec.toyworld.get("subject", "")).lower()}
    kept = [s for s in subjects if s.lower() not in own]
    if not kept:
        raise UserError(f"{spec.root / 'concept.toml'}: every select subject ({', '.join(subjects)}) is the "
                        "exemplar's own; pass --select-subjects with other subjects")
    return kept


def guidance_ratios(run, given: bool) -> list[float]:
    """`select_guidance`'s ratios where the run can judge them: a look selector, and a model guidance scale above 1
    for concept guidance to act on. Elsewhere a given list is an error, and the model's default is left off quietly
    (as the model's `--select-by look` is)."""
    cfg, scale = run.config, run.backbone.default_guidance_scale
    if isinstance(run.selector, LookSelector) and scale > 1:
        return cfg.guidance_ratios
    if given:
        raise UserError(f"select_guidance {cfg.select_guidance!r} judges the kept rows' look under guidance: it "
                        f"needs --select-every K, --select-by look and a model guidance scale above 1 ({scale:g} "
                        "here); leave it out")
    return []


def make_selector(run) -> Selector | None:
    """The run's selector (`select_every`, `select_by`), or None: selection off, or a UNet-fine-tuning method."""
    cfg = run.config
    if not cfg.select_every or cfg.finetunes_unet:
        return None
    if cfg.select_by == "exemplars":
        return ExemplarSelector(run, cfg.select_draws, cfg.select_average)
    from . import judges

    where = str(run.spec.root / "concept.toml")
    if not run.select_by_given and judges.oracle_truth(run.spec, run.backbone.model_id, where) is None:
        # the model's default (the toy model's): only where the oracle judges, never a silent BLIP-2 download
        logger.info("%s: no [toyworld] table for the oracle, so the model's default --select-by look is off; pass "
                    "--select-by look to judge by VQA on the concept's questions", where)
        return None
    if cfg.select_floor and not run.backbone.default_guidance_scale > 1:
        raise UserError(f"select_floor {cfg.select_floor:g} acts through classifier-free guidance, which is off at "
                        f"this model's guidance scale {run.backbone.default_guidance_scale:g}; leave it out")
    judge = judges.load_judge(run.spec, run.backbone.model_id, cfg.select_vqa_model, run.backbone.device, where,
                              cfg.select_look_credit)
    return LookSelector(run, judge, look_subjects(run.spec, cfg), cfg.select_images, cfg.select_average)
