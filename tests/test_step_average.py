"""`ema_decay`: the rows averaged over a run's steps (averaging.StepAverage) are what selection scores and the
results keep; training itself is untouched, and a resumed run averages as an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lego_inversion.averaging import StepAverage
from lego_inversion.concept import load_concept
from lego_inversion.config import InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.trainer import InversionRun, invert, load_training_backbone
from test_selection import _checkpoint

FAST = dict(steps=6, checkpoint_every=2, validation_steps=1, validation_images=1)


def _by_hand(iterates: list[torch.Tensor], decay: float) -> torch.Tensor:
    """Σ_k (1-d) d^(t-k) x_k / (1-d^t) over x_1 … x_t, in float64."""
    t = len(iterates)
    total = sum((1 - decay) * decay ** (t - k) * x.double() for k, x in enumerate(iterates, start=1))
    return total / (1 - decay ** t)


def test_step_average_is_the_bias_corrected_exponential_average_and_gives_the_rows_back():
    g = torch.Generator().manual_seed(0)
    rows = {"r": torch.zeros(2, 3)}
    average = StepAverage(rows, 0.7)
    with average.applied(rows, 0):  # before any update: the rows themselves
        assert torch.equal(rows["r"], torch.zeros(2, 3))
    seen = []
    for t in range(1, 6):
        rows["r"].copy_(torch.randn(2, 3, generator=g))
        average.update(rows)
        seen.append(rows["r"].clone())
        torch.testing.assert_close(average.average("r", t).double(), _by_hand(seen, 0.7), rtol=0, atol=1e-6)
    last = rows["r"].clone()
    with pytest.raises(RuntimeError):
        with average.applied(rows, 5):
            torch.testing.assert_close(rows["r"].double(), _by_hand(seen, 0.7), rtol=0, atol=1e-6)
            raise RuntimeError
    assert torch.equal(rows["r"], last)  # given back even when the block fails


def _iterates(tiny_sd, concept_dir, tmp_path, **settings) -> tuple[torch.Tensor, list[torch.Tensor], InversionRun]:
    """The initial rows and every step's rows of a run without the average (the same seed and draws)."""
    config = InversionConfig(**FAST, **settings)
    run = InversionRun(load_concept(concept_dir), load_training_backbone(str(tiny_sd), config), config,
                       tmp_path / "twin")
    start, seen = run.params["rows/text_encoder"].detach().clone(), []
    for _ in range(config.steps):
        run.train_step()
        seen.append(run.params["rows/text_encoder"].detach().clone())
    return start, seen, run


def test_results_hold_the_average_of_the_steps_and_training_is_untouched(tiny_sd, concept_dir, tmp_path):
    _, seen, _ = _iterates(tiny_sd, concept_dir, tmp_path)
    out = invert(concept_dir, tmp_path / "ema", InversionConfig(ema_decay=0.5, **FAST), model=str(tiny_sd),
                 progress=False)
    tensors, _ = _checkpoint(out)
    assert torch.equal(tensors["rows/text_encoder"], seen[-1])  # the same walk as without the average
    saved = load_file(out / "learned_embeds.safetensors")
    kept = torch.stack([saved["<subj>"], saved["<melted>"]])
    torch.testing.assert_close(kept.double(), _by_hand(seen, 0.5), rtol=0, atol=1e-6)
    assert not torch.allclose(kept, seen[-1])  # the average is not the last iterate


def test_selection_scores_the_average_at_each_offer(tiny_sd, concept_dir, tmp_path):
    settings = dict(select_every=2, select_draws=2)
    start, seen, twin = _iterates(tiny_sd, concept_dir, tmp_path, **settings)
    out = invert(concept_dir, tmp_path / "ema", InversionConfig(ema_decay=0.5, **settings, **FAST),
                 model=str(tiny_sd), progress=False)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("select/score")}
    assert sorted(logged) == [0, 2, 4, 6]
    candidates = {0: start.double()} | {s: _by_hand(seen[:s], 0.5) for s in (2, 4, 6)}
    with torch.no_grad():
        for step, rows in candidates.items():  # the twin's fixed draws are the run's (same seed): score by hand
            twin.params["rows/text_encoder"].copy_(rows)
            assert logged[step] == pytest.approx(twin.selector.score(twin), rel=1e-5)
    tensors, _ = _checkpoint(out)
    step = int(tensors["select/step"])
    saved = load_file(out / "learned_embeds.safetensors")
    torch.testing.assert_close(torch.stack([saved["<subj>"], saved["<melted>"]]).double(), candidates[step],
                               rtol=0, atol=1e-6)


def test_the_results_hold_the_kept_average_not_the_last_one(tiny_sd, concept_dir, tmp_path, monkeypatch):
    """Selection keeps the step-2 average (scripted scores); the results must be it, not the final average."""
    from lego_inversion.selection import ExemplarSelector

    monkeypatch.setattr(ExemplarSelector, "score", lambda self, run: {0: 3.0, 2: 1.0, 4: 2.0, 6: 2.0}[run.step])
    settings = dict(select_every=2, select_draws=1)
    _, seen, _ = _iterates(tiny_sd, concept_dir, tmp_path, **settings)
    out = invert(concept_dir, tmp_path / "ema", InversionConfig(ema_decay=0.5, **settings, **FAST),
                 model=str(tiny_sd), progress=False)
    saved = load_file(out / "learned_embeds.safetensors")
    kept = torch.stack([saved["<subj>"], saved["<melted>"]]).double()
    torch.testing.assert_close(kept, _by_hand(seen[:2], 0.5), rtol=0, atol=1e-6)
    assert not torch.allclose(kept, _by_hand(seen, 0.5))


def test_a_resumed_run_averages_as_an_uninterrupted_one(tiny_sd, concept_dir, tmp_path):
    whole = invert(concept_dir, tmp_path / "whole", InversionConfig(ema_decay=0.5, **FAST), model=str(tiny_sd),
                   progress=False)
    part = tmp_path / "part"
    invert(concept_dir, part, InversionConfig(ema_decay=0.5, **(FAST | {"steps": 4})), model=str(tiny_sd),
           progress=False)
    invert(concept_dir, part, InversionConfig(ema_decay=0.5, **FAST), model=str(tiny_sd), resume=True,
           progress=False)
    (a, _), (b, _) = _checkpoint(whole), _checkpoint(part)
    assert torch.equal(a["ema/rows/text_encoder"], b["ema/rows/text_encoder"])
    kept = [load_file(folder / "learned_embeds.safetensors") for folder in (whole, part)]
    assert all(torch.equal(kept[0][t], kept[1][t]) for t in ("<subj>", "<melted>"))
    with pytest.raises(UserError, match="ema_decay"):  # the average is part of the run: not changed on resume
        invert(concept_dir, part, InversionConfig(ema_decay=0.9, **FAST), model=str(tiny_sd), resume=True,
               progress=False)
