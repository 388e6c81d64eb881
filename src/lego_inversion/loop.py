"""The training step and loop, for one inversion run or many sharing one frozen model.

    from lego_inversion.loop import joint_step, predict, train_runs
    terms = joint_step(runs)          # one step of every run: one text-encoder call, one UNet call
    train_runs(runs, progress=True)   # until every run has done its steps; checkpoints, logs, results
    prediction = predict([(run.draw(), run)])   # the frozen model's output for draws, with their graph

A joint step concatenates every run's samples into one UNet call. Each run keeps its own rows, optimizer,
random streams and loss: the total that is back-propagated is the sum of the runs' losses (each scaled by its
own fp16 gradient scaler, if any), and since the runs' rows are disjoint and the model is frozen, each run's
rows receive exactly the gradient of its own loss. A run therefore learns what it would learn alone (equal in
float64, tests/test_loop.py); only the throughput changes.

Ctrl-C (SIGINT) finishes the step in flight, then writes every run's checkpoint and stops: the checkpoint is
at a step boundary, so resuming continues exactly as if uninterrupted.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from .exemplars import ExemplarSet


def encode_groups(backbone, groups: list[tuple[ExemplarSet, torch.Tensor]], frozen_ids=None) -> dict:
    """UNet conditioning for sampled images: each distinct caption goes through the text encoder once.

    `groups` pairs an exemplar set with the caption rows (CPU) of its samples; the result is in that order.
    Identical captions give identical encodings, so gathering them is exact (gradients add up as they would).
    """
    gathered: list[list[torch.Tensor]] = [[] for _ in backbone.slots]
    inverse, offset = [], 0
    for exemplars, rows in groups:
        needed, inv = torch.unique(rows, return_inverse=True)
        for s, slot_ids in enumerate(exemplars.ids):
            gathered[s].append(slot_ids[needed.to(slot_ids.device)])
        inverse.append(inv + offset)
        offset += needed.numel()
    cond = backbone.encode_text([torch.cat(ids) for ids in gathered], frozen_ids)
    index = torch.cat(inverse)
    return {k: v[index.to(v.device)] for k, v in cond.items()}


def _conditioning(backbone, pairs) -> dict:
    """Conditioning for all runs' samples in run order: one text-encoder call for captions whose tokens all
    learn, one for concept captions whose <subj> is a constant (`subject_from_with=False`)."""
    free = [(ex, rows) for d, _ in pairs for ex, rows, frozen in d.groups if not frozen]
    fixed = [(ex, rows) for d, _ in pairs for ex, rows, frozen in d.groups if frozen]
    parts = {False: encode_groups(backbone, free) if free else None}
    if fixed:
        owners = [run for d, run in pairs if any(frozen for _, _, frozen in d.groups)]
        frozen_ids = [sorted({i for run in owners for i in run.subject_ids[s]}) for s in range(len(backbone.slots))]
        parts[True] = encode_groups(backbone, fixed, frozen_ids)
    cursor = {False: 0, True: 0}
    pieces = []
    for d, _ in pairs:
        for _, rows, frozen in d.groups:
            n = rows.numel()
            pieces.append({k: v[cursor[frozen]:cursor[frozen] + n] for k, v in parts[frozen].items()})
            cursor[frozen] += n
    return {k: torch.cat([p[k] for p in pieces]) for k in pieces[0]}


def predict(pairs: list) -> torch.Tensor:
    """The frozen model's prediction for every (draw, run) pair's samples, in order, from one shared text-encoder
    and UNet pass (all runs on one backbone)."""
    backbone = pairs[0][1].backbone
    latents = torch.cat([d.latents for d, _ in pairs])
    noise = torch.cat([d.noise for d, _ in pairs])
    timesteps = torch.cat([d.timesteps for d, _ in pairs])
    geometry = torch.cat([d.geometry for d, _ in pairs])
    cond = _conditioning(backbone, pairs)
    noisy = backbone.noise_scheduler.add_noise(latents, noise, timesteps)
    with pairs[0][1].autocast():
        return backbone.predict(noisy, timesteps, cond, geometry)


def forward(runs: list, draws: list | None = None) -> list[dict[str, torch.Tensor]]:
    """Each run's loss terms (Eq. 3) for one fresh draw (or the given `draws`, one per run), from one shared
    text-encoder and UNet pass; the terms carry the graph to the runs' rows."""
    pairs = list(zip(draws, runs)) if draws is not None else [(run.draw(), run) for run in runs]
    prediction = predict(pairs)
    terms, start = [], 0
    for d, run in pairs:
        n = d.latents.shape[0]
        terms.append(run.loss_terms(prediction[start:start + n], d))
        start += n
    return terms


def joint_step(runs: list) -> list[dict[str, torch.Tensor]]:
    """One optimisation step of every run in `runs` (all on the same backbone); returns each run's loss terms
    as detached tensors (reading them as floats syncs with the device: do it only when logging)."""
    terms = forward(runs)
    sum(run.scaler.scale(t["loss"]) for run, t in zip(runs, terms)).backward()
    for run in runs:
        run.update()
    return [{k: v.detach() for k, v in t.items()} for t in terms]


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[list[bool]]:
    """SIGINT sets a flag instead of raising, so the loop can stop at a step boundary (main thread only)."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag[0] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def train_runs(runs: list, progress: bool = True, pause_at: int | None = None) -> None:
    """Train every unfinished run to its `config.steps` with joint steps, then write each run's results; with
    `pause_at`, only to that step, checkpointed, without results (the first leg of a race: sweep.py).

    Runs may start at different steps (each resumed from its own checkpoint) and have different step counts;
    a run that reaches its end drops out of the joint batch.
    """
    from torch.utils.tensorboard import SummaryWriter

    if len(runs) > 1 and any(r.config.finetunes_unet for r in runs):
        raise ValueError("runs that fine-tune the UNet cannot share it with other runs; train them one at a time")
    # a resumed run drops the events logged after its checkpoint's step (those of the checkpoint's step are kept)
    writers = {id(r): SummaryWriter(str(r.out_dir / "tensorboard"), purge_step=r.step + 1 if r.step else None)
               for r in runs}
    for run in runs:
        if run.selector is not None and run.step == 0:  # the initializer's score, offered when the run was built
            writers[id(run)].add_scalar("select/score", run.selector.best_score, 0)

    def end(run) -> int:
        return run.config.steps if pause_at is None else min(run.config.steps, pause_at)

    total = sum(end(r) for r in runs)
    desc = f"lego invert ({runs[0].config.method})" if len(runs) == 1 else f"lego invert ({len(runs)} runs)"
    bar = tqdm(total=total, initial=sum(min(r.step, end(r)) for r in runs), disable=not progress,
               desc=desc, dynamic_ncols=True)
    try:
        with _deferred_interrupt() as interrupted:
            while True:
                active = [r for r in runs if r.step < end(r)]
                if not active:
                    break
                terms = joint_step(active)
                bar.update(len(active))
                for run, run_terms in zip(active, terms):
                    _after_step(run, run_terms, writers[id(run)], bar if len(runs) == 1 else None)
                if interrupted[0]:
                    for run in runs:
                        run.save_checkpoint()
                    raise KeyboardInterrupt
        for run in runs:
            run.save_checkpoint()
            if pause_at is None:
                run.save_results()
                run.validate(writers[id(run)])
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()


def _after_step(run, terms: dict[str, torch.Tensor], writer, bar) -> None:
    """Logging, checkpoints and validation grids at their intervals (the only host syncs of a step)."""
    cfg = run.config
    if run.step % cfg.log_every == 0 or run.finished:
        values = {k: float(v) for k, v in terms.items()}
        if bar is not None:
            bar.set_postfix({k.replace("loss_", ""): f"{v:.4f}" for k, v in values.items()})
        for k, v in values.items():
            writer.add_scalar(f"train/{k}", v, run.step)
        writer.add_scalar("train/lr", run.scheduler.get_last_lr()[0], run.step)
    if run.selector is not None and (run.step % cfg.select_every == 0 or run.finished):
        with run.kept_rows():
            score = run.selector.offer(run)
        writer.add_scalar("select/score", score, run.step)  # the curve behind the kept step
        if cfg.rewind and not run.finished and run.selector.trails_by(score) >= cfg.rewind:
            run.rewind()
            writer.add_scalar("select/rewind", run.selector.best_step, run.step)  # back to which step's rows
    if run.step % cfg.checkpoint_every == 0:
        run.save_checkpoint()
    if cfg.validate_every and run.step % cfg.validate_every == 0 and not run.finished:
        with run.kept_rows():
            run.validate(writer)


def lr_factor(step: int, steps: int, warmup: int, schedule: str) -> float:
    """Learning-rate multiplier after `step` optimizer steps: linear warm-up over `warmup` steps, then constant,
    cosine or linear decay to 0 at `steps`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
