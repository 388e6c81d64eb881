"""Learned rows pulled back toward their initializer word: does part of the way transfer better than all of it?
(docs/inversion_quality.md (q)).

    PYTHONPATH=src python3 benchmarks/row_shrink.py runs/base_ex --alpha 0.5 --into runs/shrink50_ex
    PYTHONPATH=src python3 benchmarks/toyworld_ablation.py --out runs/shrink50_ex --methods lego --seeds 0 1 2 --no-cost
    python3 benchmarks/lever_screen_report.py runs/shrinkscreen --method lego   # base_{ex,ho} -> shrink50_*

For every finished `<concept>-<method>-s<seed>` run of an ablation output, a finished copy in `--into` whose concept
rows are init + α·(row − init), init being the token's initializer word's row (as in seed_agreement.py). α = 1 is the
run itself, α = 0 the initializer words. `<subj>` stays the run's own (generation on new subjects does not use it).
The ablation then generates from the copies without training, with each seed's own sampling noise, so every cell
pairs with the run's own cell. The (d) diagnosis: the rows end at 2–4× a word's norm, and (m): the seeds' shared
direction is where the exemplars pull, and the mean of three seeds' rows (a shrink of their differences)
transferred slightly better.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed_agreement import concept_rows, find_runs, initializer_row, rows_into  # noqa: E402


def shrunk(run: Path, alpha: float, tokenizer, table) -> dict:
    """The run's concept rows moved to init + α·(row − init)."""
    out = {}
    for token, row in concept_rows(run).items():
        init = initializer_row(token, tokenizer, table)
        out[token] = init + alpha * (row - init)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="an ablation output folder (with runs/)")
    ap.add_argument("--alpha", type=float, required=True, help="the fraction of the way from the initializer kept")
    ap.add_argument("--into", type=Path, required=True, help="the output folder for the copies")
    ap.add_argument("--method", default="lego")
    args = ap.parse_args(argv)
    if not 0.0 <= args.alpha <= 2.0:
        print(f"row_shrink: error: --alpha {args.alpha}: choose a value in [0, 2]", file=sys.stderr)
        return 2
    runs = find_runs([args.folder], args.method)
    if not runs:
        print(f"row_shrink: error: no finished {args.method} runs under {args.folder / 'runs'}", file=sys.stderr)
        return 2
    from lego_inversion.backbones import load_backbone

    slot = load_backbone(None).slots[0]
    n = 0
    for by_seed in runs.values():
        for run in by_seed.values():
            rows_into(args.into, run, shrunk(run, args.alpha, slot.tokenizer, slot.base_table))
            n += 1
    print(f"{n} runs with rows at α = {args.alpha} in {args.into / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
