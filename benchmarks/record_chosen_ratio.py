"""Copies of finished runs that carry the concept guidance ratio `guidance_selection.py` chose for each.

    PYTHONPATH=src python3 benchmarks/record_chosen_ratio.py --runs runs/cg45_ex/runs --choices runs/gsel_ex.json \
        --out runs/dfl5_ex/runs [--method lego] [--model M]

Runs trained before `select_guidance` existed have no ratio in their learned file, so `lego generate` guides them
plainly. For every run folder under --runs that --choices (guidance_selection.py's --json) judged, this copies the
folder to --out and writes the chosen scale's ratio to the model's guidance scale (3 → 1, 4.5 → 1.5, 6 → 2 on the
toy model) into the copy's learned file as `concept_guidance_ratio`, as `lego invert --select-guidance` records it;
the rows are untouched. Regenerating the copies with `toyworld_ablation.py` then draws each run at its chosen ratio
(at a floor of 0 a copy reproduces its chosen cell exactly; docs/inversion_quality.md (al)).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True, help="folder of run folders <concept>-<method>-s<seed>")
    ap.add_argument("--choices", type=Path, required=True, help="guidance_selection.py's --json for those runs")
    ap.add_argument("--out", type=Path, required=True, help="where the copies go (must not exist)")
    ap.add_argument("--method", default=None, help="only runs of this method")
    ap.add_argument("--model", default=None, help="the runs' model, whose guidance scale the chosen scales divide by "
                    "(default: the toy model)")
    args = ap.parse_args()
    from safetensors import safe_open

    from lego_inversion.atomic import atomic_save_file
    from lego_inversion.backbones import load_backbone

    guidance = load_backbone(args.model).default_guidance_scale
    choices = json.loads(args.choices.read_text())
    args.out.mkdir(parents=True)
    copied = 0
    for run in sorted(args.runs.iterdir()):
        if run.name not in choices or (args.method and f"-{args.method}-s" not in run.name):
            continue
        shutil.copytree(run, args.out / run.name)
        file = args.out / run.name / "learned_embeds.safetensors"
        with safe_open(str(file), framework="pt") as fh:
            meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
        record = json.loads(meta["lego_inversion"])
        record["concept_guidance_ratio"] = float(choices[run.name]["chosen"]) / guidance
        meta["lego_inversion"] = json.dumps(record)
        atomic_save_file(file, tensors, metadata=meta)
        copied += 1
    print(f"{copied} runs copied to {args.out}")


if __name__ == "__main__":
    main()
