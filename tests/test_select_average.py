"""`select_average` K: the results hold the mean of the K best-scored rows of a run (selection.Selector._pool), ties
going as selection's own; `rewind` still goes back to the best; a resumed run keeps the same K."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lego_inversion import judges
from lego_inversion.config import InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.selection import ExemplarSelector, LookSelector
from lego_inversion.trainer import invert
from test_rewind import LOOK, _twin
from test_selection import interrupted_and_resumed


@pytest.fixture
def scripted(monkeypatch):
    """Scores read from a table by the run's step, for the exemplar selector as for the look one (test_rewind)."""
    table = {}
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: None)
    for cls in (LookSelector, ExemplarSelector):
        monkeypatch.setattr(cls, "score", lambda self, run: table[run.step])
    return table


def _rows(out) -> torch.Tensor:
    saved = load_file(out / "learned_embeds.safetensors")
    return torch.stack([saved["<subj>"], saved["<melted>"]])


@pytest.mark.parametrize("average, scores, kept", [
    (2, {0: 0.5, 2: 0.75, 4: 0.75, 6: 0.25}, [2, 4]),
    (3, {0: 0.5, 2: 0.75, 4: 0.75, 6: 0.25}, [0, 2, 4]),
    (2, {0: 0.5, 2: 0.5, 4: 0.5, 6: 0.5}, [4, 6]),      # look ties go to the later rows
    (2, {0: 0.0, 2: 1.0, 4: 0.25, 6: 0.5}, [2, 6]),
])
def test_the_results_are_the_mean_of_the_k_best_looks(tiny_sd, concept_dir, tmp_path, scripted, average, scores, kept):
    """By hand: the same run without selection passes through rows r_0 … r_6; the results must be their mean over
    the kept steps, and selection.json names those steps and the best one."""
    scripted.update(scores)
    out = invert(concept_dir, tmp_path / "o", InversionConfig(**(LOOK | {"select_average": average})),
                 model=str(tiny_sd), progress=False)
    twin = _twin(tiny_sd, concept_dir, tmp_path)
    record = json.loads((out / "selection.json").read_text())
    assert record["kept_steps"] == kept
    best = max(scores.values())
    assert record["step"] == max(s for s, v in scores.items() if v == best) and record["score"] == best
    expected = torch.stack([twin[s] for s in kept]).mean(0)
    torch.testing.assert_close(_rows(out), expected, rtol=0, atol=1e-6)


def test_loss_ties_keep_the_earlier_rows(tiny_sd, concept_dir, tmp_path, scripted):
    scripted.update({0: 1.0, 2: 1.0, 4: 1.0, 6: 2.0})
    config = InversionConfig(**(LOOK | {"select_by": "exemplars", "select_draws": 1, "select_average": 2}))
    out = invert(concept_dir, tmp_path / "o", config, model=str(tiny_sd), progress=False)
    assert json.loads((out / "selection.json").read_text())["kept_steps"] == [0, 2]
    twin = _twin(tiny_sd, concept_dir, tmp_path)
    torch.testing.assert_close(_rows(out), (twin[0] + twin[2]) / 2, rtol=0, atol=1e-6)


def test_one_is_the_best_rows_alone(tiny_sd, concept_dir, tmp_path, scripted):
    scripted.update({0: 0.5, 2: 0.75, 4: 0.75, 6: 0.25})
    out = invert(concept_dir, tmp_path / "o", InversionConfig(**LOOK), model=str(tiny_sd), progress=False)
    assert torch.equal(_rows(out), _twin(tiny_sd, concept_dir, tmp_path)[4])
    assert InversionConfig().resolved({}).select_average == 1


def test_rewind_goes_back_to_the_best_not_to_the_mean(tiny_sd, concept_dir, tmp_path, scripted, monkeypatch):
    """Step 4 trails the best (step 2) by 0.5: training restarts from r_2 itself, as without select_average."""
    scripted.update({0: 0.0, 2: 1.0, 4: 0.5, 6: 0.5})
    restored = []
    original = LookSelector.restore

    def spy(self, run):
        original(self, run)
        restored.append(run.params["rows/text_encoder"].detach().clone())

    monkeypatch.setattr(LookSelector, "restore", spy)
    config = InversionConfig(**(LOOK | {"select_average": 2, "rewind": 0.5}))
    invert(concept_dir, tmp_path / "o", config, model=str(tiny_sd), progress=False)
    assert len(restored) == 1 and torch.equal(restored[0], _twin(tiny_sd, concept_dir, tmp_path)[2])


def test_a_resumed_run_keeps_the_same_k(tiny_sd, concept_dir, tmp_path, monkeypatch):
    """The K kept rows travel in the checkpoint (the judge: the images' mean brightness, a function of the rows)."""
    import numpy as np

    bright = lambda images, subjects: [float(np.asarray(im, dtype=np.float64).mean()) for im in images]  # noqa: E731
    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: bright)
    config = InversionConfig(**(LOOK | {"select_every": 1, "select_average": 3}))
    full = invert(concept_dir, tmp_path / "full", config, model=str(tiny_sd), progress=False)
    resumed = interrupted_and_resumed(concept_dir, tmp_path / "part", config, str(tiny_sd), monkeypatch)
    assert torch.equal(_rows(full), _rows(resumed))
    record = json.loads((full / "selection.json").read_text())
    assert record == json.loads((resumed / "selection.json").read_text()) and len(record["kept_steps"]) == 3


@pytest.mark.parametrize("bad", [0, -1, True])
def test_config_rejects_bad_select_average(bad):
    with pytest.raises(UserError, match="select_average must be at least 1"):
        InversionConfig(select_average=bad)
