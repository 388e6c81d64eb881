"""Two processes (torchrun, or `accelerate launch`, gloo on CPU) give the same report as one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_helpers import run_cli, write_config

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                 "--master_port", "{port}"],
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_ip", "127.0.0.1", "--main_process_port", "{port}"],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_equal_one(tmp_path, tiny, fake_generation, launcher):
    cfg = write_config(tmp_path, tiny, num_images=3)
    one, two = tmp_path / "one", tmp_path / "two"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker below: the same float reductions, so bit-equal scores
    try:
        assert run_cli(["evaluate", str(cfg), "--out", str(one), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(HERE)]), OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false",
               EVAL_TEST_LOG=str(tmp_path / "log"))
    port = str(_free_port())
    cmd = [a.replace("{port}", port) for a in LAUNCHERS[launcher]]
    cmd += [str(HERE / "dist_entry.py"), "evaluate", str(cfg), "--out", str(two), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"rc {proc.returncode}\nstdout: {proc.stdout[-1500:]}\nstderr: {proc.stderr[-3000:]}"

    # both processes worked, on disjoint shares that together cover everything
    logs = {r: [json.loads(x) for x in (tmp_path / "log" / f"rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)}
    for kind, total in (("generate", (3 + 2) * 2 * 3), ("score", 18 + 12 + 30 + 30)):
        shares = [[tuple(i) if isinstance(i, list) else i for e in logs[r] if e["kind"] == kind for i in e["items"]]
                  for r in (0, 1)]
        assert shares[0] and shares[1], kind
        assert not set(shares[0]) & set(shares[1]) and len(shares[0]) + len(shares[1]) == total, kind
    for name in ("report.json", "report.md", "report.csv"):
        assert (two / name).read_text() == (one / name).read_text(), name
    for metric in ("vqa", "count", "clip", "dino"):
        assert (two / "scores" / metric / "scores.jsonl").read_text() == \
            (one / "scores" / metric / "scores.jsonl").read_text(), metric
    imgs = sorted(p.relative_to(two) for p in (two / "images").rglob("*.png"))
    assert imgs == sorted(p.relative_to(one) for p in (one / "images").rglob("*.png"))
    assert all((two / p).read_bytes() == (one / p).read_bytes() for p in imgs)
