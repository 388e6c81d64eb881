"""Joint steps: several runs on one model learn exactly what each learns alone; `lego invert` over many folders."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from concept_fixtures import CONCEPT_TOML, make_concept
from lego_inversion.backbones import load_backbone
from lego_inversion.config import InversionConfig
from lego_inversion.loop import train_runs
from lego_inversion.run_folder import open_run_folder
from lego_inversion.trainer import build_run

FAST = dict(steps=3, checkpoint_every=2, validation_steps=1, validation_images=1)


def _float64(backbone):
    """The whole frozen model in float64, so that "equal" means bit-equal, not equal up to rounding."""
    for module in [backbone.unet, backbone.vae, *(s.encoder for s in backbone.slots)]:
        module.double()
    return backbone


def _open_runs(backbone, cells, root, alias_runs, float64=False):
    """The runs of `cells` [(concept folder, config)] on one backbone, their folders opened (not yet trained)."""
    runs = []
    for i, (concept, config) in enumerate(cells):
        run, previous = build_run(concept, root / f"r{i}", config, backbone, alias=str(i) if alias_runs else "")
        if float64:
            for p in run.params.values():
                p.data = p.data.double()
        open_run_folder(run, previous)
        runs.append(run)
    return runs


def _train(tiny_sd, cells, root, alias_runs):
    runs = _open_runs(_float64(load_backbone(str(tiny_sd))), cells, root, alias_runs, float64=True)
    train_runs(runs, progress=False)
    return [{t: v for t, v in zip(r.tokens, r.params["rows/text_encoder"].detach())} for r in runs]


def test_joint_runs_equal_separate_runs_to_float64_rounding(tiny_sd, concept_dir, tmp_path):
    other = make_concept(tmp_path / "other", CONCEPT_TOML.replace('init = "melted"', 'init = "frozen"'))
    cells = [(concept_dir, InversionConfig(method="lego", seed=0, **FAST)),
             (concept_dir, InversionConfig(method="ti", seed=1, **FAST)),
             (other, InversionConfig(method="lego", seed=2, subject_from_with=False, **FAST))]
    joint = _train(tiny_sd, cells, tmp_path / "joint", alias_runs=True)
    for i, cell in enumerate(cells):
        alone = _train(tiny_sd, [cell], tmp_path / f"alone{i}", alias_runs=False)[0]
        assert joint[i].keys() == alone.keys()
        for token in alone:
            # Equal to float64 rounding: the CPU GEMM kernels round differently for different batch sizes
            # (measured 1.3e-16 absolute after 3 steps), so bit-equality does not hold; 1e-12 is far below
            # any float32 effect and far above that rounding.
            torch.testing.assert_close(joint[i][token], alone[token], rtol=1e-12, atol=1e-14)
            assert not torch.equal(alone[token], joint[(i + 1) % 3].get(token, alone[token] + 1))


def test_cli_trains_the_cartesian_product_into_run_folders(tiny_sd, concept_dir, tmp_path):
    other = make_concept(tmp_path / "frozen_thing", CONCEPT_TOML)
    cmd = [sys.executable, "-m", "lego_inversion", "--threads", "1", "invert", str(concept_dir), str(other),
           "--method", "lego", "ti", "--seed", "0", "--out", str(tmp_path / "sweep"), "--model", str(tiny_sd),
           "--steps", "2", "--validation-steps", "1", "--validation-images", "1", "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True)
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    assert names == sorted(f"{c}-{m}-s0" for c in (concept_dir.name, "frozen_thing") for m in ("lego", "ti"))
    for name in names:
        run = tmp_path / "sweep" / name
        assert {"learned_embeds.safetensors", "concept.json", "config.json", "checkpoint.safetensors",
                "diffusers", "validation"} <= {p.name for p in run.iterdir()}
        concept = json.loads((run / "concept.json").read_text())
        assert concept["tokens"] == ["<melted>"] and concept["step"] == 2  # the folder's own token names
        assert json.loads((run / "config.json").read_text())["method"] == name.split("-")[-2]
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr and again.stderr.count("\n") == 1
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_duplicate_run_folders_are_refused(tiny_sd, concept_dir, tmp_path):
    from lego_inversion.errors import UserError
    from lego_inversion.sweep import invert_many

    with pytest.raises(UserError, match="share the folder"):
        invert_many([concept_dir, concept_dir], ["lego"], [0], tmp_path / "s", InversionConfig(**FAST),
                    model=str(tiny_sd))
    assert not (tmp_path / "s").exists()


def test_torchrun_shards_the_runs_between_processes(tiny_sd, concept_dir, tmp_path):
    """Under a 2-process launch each process trains its own share of the runs, and together they write every
    run folder once, each equal in layout to a one-process sweep's."""
    import os
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    args = ["invert", str(concept_dir), "--method", "lego", "ti", "--seed", "0", "1", "--model", str(tiny_sd),
            "--steps", "2", "--validation-steps", "1", "--validation-images", "1", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", LEGO_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", port, "-m", "lego_inversion", *args, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == sorted(f"{concept_dir.name}-{m}-s{s}" for m in ("lego", "ti") for s in (0, 1))
    shares = [line for line in proc.stdout.splitlines() if "runs written" in line]
    assert sorted(shares) == ["2 runs written under " + str(tmp_path / "two")] * 2  # 2 + 2, not 4 + 4
    for name in names:
        assert (tmp_path / "two" / name / "learned_embeds.safetensors").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a lent GPU)")
def test_joint_runs_match_separate_runs_in_bf16_on_cuda(tiny_sd, concept_dir, tmp_path):
    """On the GPU path (frozen model stored in bf16, autocast) a joint step learns what the separate runs learn,
    to bf16 rounding: each run's learned change agrees with its solo change far better than with another run's."""
    from lego_inversion.trainer import load_training_backbone

    other = make_concept(tmp_path / "other", CONCEPT_TOML.replace('init = "melted"', 'init = "frozen"'))
    cells = [(concept_dir, InversionConfig(method="lego", seed=0, **FAST)),
             (concept_dir, InversionConfig(method="ti", seed=1, **FAST)),
             (other, InversionConfig(method="lego", seed=2, **FAST))]
    cells = [(c, dataclasses.replace(k, device="cuda", mixed_precision="bf16", steps=20)) for c, k in cells]

    def train(chosen, root, alias):
        runs = _open_runs(load_training_backbone(str(tiny_sd), chosen[0][1]), chosen, root, alias)
        start = [r.params["rows/text_encoder"].detach().clone() for r in runs]
        train_runs(runs, progress=False)
        # the concept token's row (last), whose shape every method shares
        return [(r.params["rows/text_encoder"].detach() - s)[-1].float().cpu() for r, s in zip(runs, start)]

    joint = train(cells, tmp_path / "joint", alias=True)
    alone = [train([cell], tmp_path / f"alone{i}", alias=False)[0] for i, cell in enumerate(cells)]
    for i in range(len(cells)):
        moved = alone[i].norm()
        assert moved > 0
        assert (joint[i] - alone[i]).norm() / moved < 0.05
        assert (alone[(i + 1) % 3] - alone[i]).norm() / moved > 0.3  # a wrong pairing would fail


def test_training_calls_the_compiled_unet_and_marks_each_step(tiny_sd, monkeypatch):
    """With `--compile` the training forward goes through the compiled copy (a `torch.compile`d module has no
    truth value, so the choice must not use `or`), and each call starts a new CUDA-graph step."""
    backbone = load_backbone(str(tiny_sd))
    compiled = torch.compile(backbone.unet, mode="reduce-overhead")  # lazy: nothing compiles until called
    backbone._train_unet = compiled
    assert backbone.train_unet is compiled
    calls, marks = [], []
    backbone._train_unet = lambda *a, **k: calls.append(a) or backbone.unet(*a, **k)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(len(calls)))
    noisy = torch.randn(2, *backbone.latent_shape(1, 64)[1:])
    cond = backbone.encode_text([s.tokenizer(["a cube"] * 2, padding="max_length", max_length=77,
                                             return_tensors="pt").input_ids for s in backbone.slots])
    out = backbone.predict(noisy, torch.tensor([10, 500]), cond)
    assert out.shape == noisy.shape and len(calls) == 1 and marks == [0]  # marked before the call
    backbone._train_unet = None
    torch.testing.assert_close(backbone.predict(noisy, torch.tensor([10, 500]), cond), out)
    assert marks == [0]  # eager training marks nothing
