"""Keeping the best rows of a run, scored on fixed draws of its own exemplars (`select_every`).

    selector = Selector(run, draws=16)   # fixed draws from their own random streams; scores the initial rows
    selector.offer(run)                  # score the current rows; keep a copy if they beat the best so far
    selector.restore(run)                # put the best rows back (the trainer does this before saving results)

Why: late in training the gradient on a learned row is almost all noise (a step carries 2-5 % signal on the
toy model at 400 steps), and Adam moves every coordinate by ~lr per step whatever the signal, so the last
iterate is where a random walk stopped. Scoring every K steps on the same draws (the same images, flips, t and
ε each time: common random numbers) compares iterates without that noise, and the run keeps the one that fits
its exemplars best, its initializer included (step 0). The score is the denoising part of Eq. 3 (concept batch
+ subject batch); the Context Loss is left out, since it is not a fit to the images. Measured on the toy model
(docs/inversion_quality.md (g)) it ties the last rows: the best-scored rows came from steps 300-400 in every
run, so it is off by default.
The best rows, their score and step travel in the checkpoint, so a resumed run selects as an uninterrupted one.
Only learned rows are kept: methods that fine-tune the UNet do not select.
"""

from __future__ import annotations

import math

import torch

SELECT_STREAM = 0x5E1EC7  # offset of the selection draws' seeds from the run's seed


class Selector:
    def __init__(self, run, draws: int):
        seed, device = run.config.seed + SELECT_STREAM, run.backbone.device
        own = {"choices": torch.Generator().manual_seed(seed), "noise": torch.Generator(device).manual_seed(seed)}
        training, run.generators = run.generators, own
        try:
            self.draws = [run.draw() for _ in range(draws)]
        finally:
            run.generators = training
        # checkpointed state: tensors, so that save_checkpoint / load_checkpoint carry them with the rows
        self.state = {"select/score": torch.tensor([math.inf]), "select/step": torch.tensor([-1.0])}
        self.state |= {f"select/{k}": p.detach().clone() for k, p in run.params.items()}
        self.offer(run)  # the initializer is a candidate too

    @property
    def best_step(self) -> int:
        return int(self.state["select/step"])

    @property
    def best_score(self) -> float:
        return float(self.state["select/score"])

    @torch.no_grad()
    def score(self, run) -> float:
        """Mean denoising loss (Eq. 3 without the Context Loss) of the run's current rows on the fixed draws."""
        from .loop import forward

        total = 0.0
        for draw in self.draws:
            terms = forward([run], [draw])[0]
            total += float(terms["loss_concept"] + terms.get("loss_subject", 0.0))
        return total / len(self.draws)

    def offer(self, run) -> float:
        """Score the current rows and keep them if they are the best so far; returns the score."""
        score = self.score(run)
        if score < self.best_score:
            self.state["select/score"].fill_(score)
            self.state["select/step"].fill_(run.step)
            for k, p in run.params.items():
                self.state[f"select/{k}"].copy_(p.detach())
        return score

    @torch.no_grad()
    def restore(self, run) -> None:
        for k, p in run.params.items():
            p.copy_(self.state[f"select/{k}"])
