"""Table of a lever screen (benchmarks/gpu_lever_screen.sh): every setting paired with the defaults' cells.

    python3 benchmarks/lever_screen_report.py OUT_DIR [--baseline defaults] [--method lego] [--md FILE]
        [--pool ex dev]

OUT_DIR holds one folder per setting and split (ex, ho, dev), <setting>_<split>/cells/*.json (toyworld_ablation.py
cells). For each setting and split: the mean success, leakage and clean hits over its cells with 95 % bootstrap
intervals, the paired difference against the baseline setting on the cells both have (same concept, seed and sampling
noise), and per-concept success. A setting cut short shows how many cells it has. With `--pool`, also each
setting's paired differences pooled over those splits (the cells of each split in turn, as a decision rule over
several tuning splits reads them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toyworld_ablation import bootstrap_ci, load_cells

METRICS = ("success", "leakage", "clean")
SPLITS = ("ex", "ho", "dev")  # examples/, benchmarks/heldout/, benchmarks/dev/


def paired_diffs(a: dict, b: dict, metric: str) -> list[float]:
    """a − b on each key both have, in key order."""
    return [a[k][metric] - b[k][metric] for k in sorted(set(a) & set(b))]


def paired(a: dict, b: dict, metric: str) -> tuple[float, float, float] | None:
    """Mean and 95 % interval of a − b over the keys both have."""
    diffs = paired_diffs(a, b, metric)
    return bootstrap_ci(diffs) if diffs else None


def pooled(out: Path, baseline: str, method: str, pool: list[str]) -> str:
    """Rows of each setting that has every split in `pool`: its paired differences over all those splits' cells."""
    names = sorted({p.name.rsplit("_", 1)[0] for p in out.iterdir() if (p / "cells").is_dir()} - {baseline})
    lines = [f"Pooled over {' + '.join(pool)} (paired against {baseline}):", "",
             "| setting | pairs | paired success | paired leakage | paired clean |", "|---" * 5 + "|"]
    for name in names:
        if not all((out / f"{name}_{split}" / "cells").is_dir() for split in pool):
            continue
        pairs = [(load_cells([out / f"{name}_{split}"], method), load_cells([out / f"{baseline}_{split}"], method))
                 for split in pool]
        diffs = {m: [d for a, b in pairs for d in paired_diffs(a, b, m)] for m in METRICS}
        if diffs[METRICS[0]]:
            lines.append(f"| {name} | {len(diffs[METRICS[0]])} | " + " | ".join(
                "{:+.3f} [{:+.3f}, {:+.3f}]".format(*bootstrap_ci(diffs[m])) for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def report(out: Path, baseline: str = "defaults", method: str = "lego") -> str:
    folders = sorted(p for p in out.iterdir() if (p / "cells").is_dir() and p.name.rsplit("_", 1)[-1] in SPLITS)
    lines = []
    for split in SPLITS:
        base = load_cells([out / f"{baseline}_{split}"], method)
        if not base:
            continue
        concepts = sorted({k[0] for k in base})
        lines += ["", f"Split {split} (paired against {baseline}: same concept, seed and sampling noise):", "",
                  "| setting | cells | success | leakage | clean | paired success | paired leakage | paired clean | "
                  "per concept success (" + ", ".join(c.split("_")[0] for c in concepts) + ") |",
                  "|---" * 9 + "|"]
        rows = [f for f in folders if f.name.endswith(f"_{split}")]
        rows.sort(key=lambda f: (f.name != f"{baseline}_{split}", f.name))
        for f in rows:
            cells = load_cells([f], method)
            if not cells:
                continue
            means = [bootstrap_ci([c[m] for c in cells.values()]) for m in METRICS]
            diffs = [paired(cells, base, m) if f.name != f"{baseline}_{split}" else None for m in METRICS]
            per = " ".join(f"{np.mean([c['success'] for k, c in cells.items() if k[0] == name]):.2f}"
                           if any(k[0] == name for k in cells) else "-" for name in concepts)
            lines.append(f"| {f.name.rsplit('_', 1)[0]} | {len(cells)} | "
                         + " | ".join(f"{m:.2f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in means) + " | "
                         + " | ".join("–" if d is None else f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]" for d in diffs)
                         + f" | {per} |")
    return "\n".join(lines).lstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--baseline", default="defaults")
    ap.add_argument("--method", default="lego")
    ap.add_argument("--md", default=None, help="also write the table to this file")
    ap.add_argument("--pool", nargs="+", choices=SPLITS, default=None,
                    help="also pool each setting's paired differences over these splits")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not any((out / f"{args.baseline}_{split}").is_dir() for split in SPLITS):
        print(f"lever_screen_report: error: {out}: no {args.baseline}_ex, _ho or _dev folder; "
              "pass the screen's OUT_DIR", file=sys.stderr)
        return 2
    table = report(out, args.baseline, args.method)
    if args.pool:
        table += "\n" + pooled(out, args.baseline, args.method, args.pool)
    if args.md:
        from lego_inversion.atomic import atomic_write_text

        atomic_write_text(Path(args.md), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
