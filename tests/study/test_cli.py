"""`lego study` as a command-line tool: output into a pipe whose reader stops early (`... | head`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lego_inversion.study.cli import EXIT_BROKEN_PIPE
from lego_inversion.study.create import CreateConfig, create_study

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_links_into_a_closed_pipe_ends_quietly(study_inputs, tmp_path):
    """Like `lego study links STUDY | head -n 1`: the reader takes one line and goes away while the command
    still has far more than a pipe buffer (64 KB) to write. No traceback, exit code 128 + SIGPIPE."""
    out = tmp_path / "many"
    create_study(CreateConfig(out=str(out), sets=study_inputs["sets"], concepts=study_inputs["concepts"],
                              raters_per_pair=1, raters=3000))
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "lego_inversion.study.cli", "study", "links", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -n 1` does after its line
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first.startswith(b"r001\thttp://127.0.0.1:8000/r/")
    assert err == "" and proc.returncode == EXIT_BROKEN_PIPE == 141


def test_links_into_a_pipe_that_reads_everything_still_exits_0(small_study):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "lego_inversion.study.cli", "study", "links", str(small_study.root)],
                          capture_output=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stderr == b"" and len(done.stdout.splitlines()) == 4
