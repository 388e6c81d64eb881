"""The toy-world ablation's worker processes (`toyworld_ablation.py --jobs N`).

    code = run_workers(Path("benchmarks/toyworld_ablation.py"), args, argv)   # N workers, each `--share i/N`
    mine = share(jobs, part, parts)                                           # a worker's (example, method, seed)s
"""

from __future__ import annotations

import sys
from pathlib import Path


def share(jobs: list[tuple[Path, str, int]], part: int, parts: int) -> list[tuple[Path, str, int]]:
    """Worker `part` of `parts`' jobs (`--jobs`): each method's jobs dealt out in turn, so every worker gets an even
    share of each method (their training costs differ: Subject Separation doubles a step's batch)."""
    order = {m: i for i, m in enumerate(dict.fromkeys(m for _, m, _ in jobs))}
    return sorted(jobs, key=lambda j: order[j[1]])[part::parts]


def run_workers(script: Path, args, argv: list[str]) -> int:
    """`--jobs N`: `script` again (with `argv`) in N processes, each on its `share` of the jobs with --threads // N
    torch threads (at least 1); returns the first failing worker's exit code, else 0. Why processes: on the 2-core
    machine two processes at one thread each train 1.85x as fast as one, two threads in one process 1.45x
    (docs/throughput.md)."""
    import os
    import subprocess

    threads = max(1, args.threads // args.jobs)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    workers = [subprocess.Popen([sys.executable, str(script), *argv, "--jobs", "1", "--share",
                                 f"{i}/{args.jobs}", "--threads", str(threads), "--no-cost"], env=env)
               for i in range(args.jobs)]
    try:
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:  # the workers got the SIGINT too: they checkpoint and stop
        for w in workers:
            w.wait()
        return 130
    return next((c for c in codes if c), 0)
