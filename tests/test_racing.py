"""`--race N`: several seeds train jointly to step N, only the one with the best look so far trains on (sweep.py)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lego_inversion import judges
from lego_inversion.cli import main
from lego_inversion.config import InversionConfig
from lego_inversion.errors import UserError
from lego_inversion.selection import LookSelector
from lego_inversion.sweep import invert_many
from lego_inversion.trainer import InversionRun, invert
from test_selection import _checkpoint

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LOOK = dict(steps=6, checkpoint_every=2, validation_steps=1, validation_images=1, select_every=2, select_by="look",
            select_subjects="cube,sphere", select_images=2)
SEEDS = [0, 1, 2]


@pytest.fixture
def change_judge(monkeypatch):
    """Look scores that are a pure function of the rows and tell seeds apart: how far the rows have moved from the
    first rows scored (every run starts from the same initializer rows). The tiny test model's images hardly change
    in a few steps, so an image judge would tie every seed."""
    reference = {}

    def score(self, run):
        rows = run.params["rows/text_encoder"].detach().double()
        return float((rows - reference.setdefault("rows", rows.clone())).norm())

    monkeypatch.setattr(judges, "load_judge", lambda *a, **k: None)
    monkeypatch.setattr(LookSelector, "score", score)


def _race(concept_dir, root, tiny_sd, seeds=SEEDS, resume=False):
    return invert_many([concept_dir], ["lego"], seeds, root, InversionConfig(**LOOK, race_steps=2),
                       model=str(tiny_sd), resume=resume, progress=False)


def _interrupt_at(monkeypatch, steps: set[int]):
    """Ctrl-C at the start of the first draw at each of `steps` (once each)."""
    original, pending = InversionRun.draw, set(steps)

    def draw(self):
        if self.step in pending:
            pending.discard(self.step)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(InversionRun, "draw", draw)


def test_race_goes_on_with_the_best_look_so_far_and_learns_what_that_seed_learns_alone(
        tiny_sd, concept_dir, tmp_path, change_judge, monkeypatch):
    root = tmp_path / "race"
    _race(concept_dir, root, tiny_sd)
    record = json.loads((root / "melted-lego-race.json").read_text())
    # independently: each seed alone for 2 steps; its selection.json holds its best look up to step 2
    alone = {s: json.loads((invert(concept_dir, tmp_path / f"two{s}", InversionConfig(**(LOOK | {"steps": 2}), seed=s),
                                   model=str(tiny_sd), progress=False) / "selection.json").read_text()) for s in SEEDS}
    assert record["at_step"] == 2 and sorted(record["scores"]) == [f"melted-lego-s{s}" for s in SEEDS]
    for s in SEEDS:
        assert record["scores"][f"melted-lego-s{s}"]["score"] == pytest.approx(alone[s]["score"], rel=1e-4)
    assert len({round(a["score"], 4) for a in alone.values()}) == 3  # the judge tells the seeds apart
    winner = max(SEEDS, key=lambda s: alone[s]["score"])
    assert record["seed"] == winner and record["winner"] == f"melted-lego-s{winner}"
    # the losers stopped at step 2 with their checkpoint and no results
    for s in SEEDS:
        folder = root / f"melted-lego-s{s}"
        assert _checkpoint(folder)[1]["step"] == (6 if s == winner else 2)
        assert (folder / "learned_embeds.safetensors").is_file() == (s == winner)
    # the winner learned what its seed learns in a 6-step run alone
    full = invert(concept_dir, tmp_path / "full", InversionConfig(**LOOK, seed=winner), model=str(tiny_sd),
                  progress=False)
    a, b = load_file(root / f"melted-lego-s{winner}" / "learned_embeds.safetensors"), \
        load_file(full / "learned_embeds.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # the winner's TensorBoard holds every look score of both legs, the race step's too
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(root / f"melted-lego-s{winner}" / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("select/score")}
    assert sorted(logged) == [0, 2, 4, 6] and logged[2] == pytest.approx(record["scores"][record["winner"]]["score"])
    best = json.loads((root / "melted-lego-best" / "best.json").read_text())
    assert best["chosen"] == f"melted-lego-s{winner}" and best["race"] == record

    # interrupted in the first leg and again in the second, then resumed: the same race, bit for bit
    part = tmp_path / "part"
    _interrupt_at(monkeypatch, {1, 3})
    with pytest.raises(KeyboardInterrupt):
        _race(concept_dir, part, tiny_sd)
    assert not (part / "melted-lego-race.json").exists()
    with pytest.raises(KeyboardInterrupt):
        _race(concept_dir, part, tiny_sd, resume=True)
    assert json.loads((part / "melted-lego-race.json").read_text()) == record
    _race(concept_dir, part, tiny_sd, resume=True)
    c = load_file(part / f"melted-lego-s{winner}" / "learned_embeds.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert not any((part / f"melted-lego-s{s}" / "learned_embeds.safetensors").exists() for s in SEEDS if s != winner)

    # resuming the race with other seeds is refused before anything trains
    with pytest.raises(UserError, match="a race among"):
        _race(concept_dir, part, tiny_sd, seeds=[0, 1, 3], resume=True)


@pytest.mark.parametrize("flags, message", [
    (["--seed", "0", "--race", "100"], "races several seeds"),
    (["--seed", "0", "1", "--race", "30"], "multiple of --select-every (50)"),
    (["--seed", "0", "1", "--race", "400"], "below --steps (400)"),
    (["--seed", "0", "1", "--race", "100", "--select-by", "exemplars"], "does not select by look"),
    (["--seed", "0", "1", "--race", "-1"], "race_steps must be >= 0"),
])
def test_bad_race_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert main(["invert", str(EXAMPLES / "melted_cube"), "--out", str(out), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lego: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_torchrun_keeps_each_race_in_one_process(tmp_path):
    """Under a 2-process launch, the share is whole races: 3 races of 2 seeds split 2 + 1, never a race's seeds
    across processes (a per-run split would put ti's s0 and s1 apart)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", LEGO_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", port, "-m", "lego_inversion", "invert", str(EXAMPLES / "melted_cube"), "--method", "lego",
           "ti", "cl-only", "--seed", "0", "1", "--steps", "4", "--select-every", "2", "--race", "2",
           "--select-images", "1", "--validation-steps", "2", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in ("lego", "ti", "cl-only"):
        record = json.loads((out / f"melted_cube-{method}-race.json").read_text())
        assert sorted(record["scores"]) == [f"melted_cube-{method}-s{s}" for s in (0, 1)]
        assert (out / f"melted_cube-{method}-best" / "best.json").is_file()
    shares = sorted(line.split(" (")[0] for line in proc.stdout.splitlines() if "written under" in line)
    assert shares == [f"1 run written under {out}", f"2 runs written under {out}"]
