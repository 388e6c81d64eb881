"""Choosing each run's concept guidance scale by selection's look judge, measured on cells already generated.

    PYTHONPATH=src python3 benchmarks/guidance_selection.py --runs runs/cg45_ex/runs --examples examples \
        --scales 3=runs/screen_st/base_ex 4.5=runs/cg45_ex 6=runs/cg6_ex [--noise-offset 10000] [--json FILE]
        [--scores-from FILE] [--method lego] [--cells-out DIR]
    python3 benchmarks/guidance_selection.py --pool runs/gsel_ex.json runs/gsel_dev.json [--seeds 0 1 2]

For every run folder under --runs (`<concept>-lego-s<seed>`): its kept rows are judged as `--select-by look` judges
them (the oracle's clean hits, the model's select subjects without the exemplar's, `select_images` each,
`select_steps` sampler steps; selection.LookSelector) at each scale of --scales, and the best scale is chosen (ties:
the lower scale). The noise is `LOOK_SEED + offset + i`: with offset 0 it is selection's own, on which the kept rows
were chosen as the best at the pipeline's guidance (so their score there equals selection.json's and is biased
upward); the default 10000 draws fresh noise for every scale alike. The run's cell at that scale is read from the
folder given for it (toyworld_ablation.py cells of the same runs, generated at that concept guidance), and the chosen
cells are paired with the first scale's cells (same concept, seed and sampling noise). `--scores-from` reuses the
judge's scores of an earlier --json instead of judging again; `--cells-out` writes the chosen cells where the
ablation summarizes them; `--pool` pools the paired differences of several --json files (the splits a decision
rule reads together). Docs: docs/inversion_quality.md (ai).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toyworld_ablation import bootstrap_ci, load_cells

METRICS = ("success", "clean", "leakage")


def judge_scores(run: Path, example: Path, scales: list[float], offset: int) -> list[float]:
    """The look judge's mean score of the run's rows at each concept guidance scale (selection.judge_guidance, as
    `lego invert --select-guidance` judges, on noise LOOK_SEED + offset + i)."""
    from lego_inversion import judges
    from lego_inversion.concept import load_concept
    from lego_inversion.config import InversionConfig
    from lego_inversion.generation import load_generator
    from lego_inversion.guidance import concept_free_prompts
    from lego_inversion.selection import judge_guidance, look_latents, look_subjects
    from lego_inversion.trainer import concept_prompts

    spec = load_concept(example)
    gen = load_generator(None, [run])
    backbone = gen.backbone
    cfg = InversionConfig().resolved(backbone.inversion_defaults)
    judged = [s for s in look_subjects(spec, cfg) for _ in range(cfg.select_images)]
    prompts = concept_prompts(spec, gen.expand_prompt("{concept}"), judged)
    judge = judges.load_judge(spec, backbone.model_id, cfg.select_vqa_model, backbone.device,
                              where=str(example / "concept.toml"), look_credit=cfg.select_look_credit)
    backbone.pipe.set_progress_bar_config(disable=True)
    return judge_guidance(backbone, judge, prompts, concept_free_prompts(prompts, gen.concept_tokens), judged,
                          look_latents(backbone, len(prompts), backbone.resolution, offset),
                          [scale / backbone.default_guidance_scale for scale in scales], cfg.select_steps)


def summary(records: dict) -> list[str]:
    """Means (chosen, baseline) and paired differences, chosen − baseline, over the runs of `records` (--json's
    per-run entries)."""
    lines = []
    for m in METRICS:
        chosen, base = ([r["metrics"][m][i] for r in records.values()] for i in (0, 1))
        diffs = [a - b for a, b in zip(chosen, base)]
        lines.append("{}: chosen {:.3f} [{:.3f}, {:.3f}], baseline {:.3f}; chosen − baseline: {:+.3f} [{:+.3f}, "
                     "{:+.3f}]".format(m, *bootstrap_ci(chosen), sum(base) / len(base), *bootstrap_ci(diffs)))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", nargs="+", type=Path, metavar="JSON", help="only pool these --json files' runs")
    ap.add_argument("--runs", type=Path, help="folder of run folders <concept>-lego-s<seed>")
    ap.add_argument("--examples", type=Path, help="the concept folders of those runs")
    ap.add_argument("--scales", nargs="+", metavar="SCALE=CELLS_DIR",
                    help="each candidate scale and the ablation folder of its cells; the first is the baseline")
    ap.add_argument("--scores-from", type=Path, help="a --json file whose judge scores to reuse")
    ap.add_argument("--seeds", nargs="+", type=int, help="--pool: only these seeds' runs")
    ap.add_argument("--cells-out", type=Path, help="also write each run's chosen cell to CELLS_OUT/cells/, as "
                    "toyworld_ablation.py does (running the ablation there summarizes them)")
    ap.add_argument("--method", default="lego")
    ap.add_argument("--noise-offset", type=int, default=10000, help="judge on noise LOOK_SEED + offset + i")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the per-run scores and choices here")
    args = ap.parse_args()
    if args.pool:
        records = {f"{path}:{k}": v for path in args.pool for k, v in json.loads(path.read_text()).items()
                   if args.seeds is None or int(k.rsplit("-s", 1)[1]) in args.seeds}
        print(f"{len(records)} runs from {len(args.pool)} files", *summary(records), sep="\n")
        return
    if not (args.runs and args.examples and args.scales):
        ap.error("--runs, --examples and --scales are needed unless --pool")
    earlier = json.loads(args.scores_from.read_text()) if args.scores_from else {}
    import torch

    torch.set_num_threads(args.threads)
    scales = [float(s.split("=", 1)[0]) for s in args.scales]
    cells = [load_cells([Path(s.split("=", 1)[1])], args.method) for s in args.scales]
    chosen, records = {}, {}
    marker = f"-{args.method}-s"
    for run in sorted(p for p in args.runs.iterdir()
                      if marker in p.name and (p / "learned_embeds.safetensors").is_file()):
        concept, seed = run.name.rsplit(marker, 1)
        key = (concept, int(seed))
        if not all(key in c for c in cells):
            continue
        scores = earlier[run.name]["scores"] if run.name in earlier else \
            judge_scores(run, args.examples / concept, scales, args.noise_offset)
        best = max(range(len(scales)), key=lambda i: (scores[i], -i))
        chosen[key] = cells[best][key]
        records[run.name] = {"scores": scores, "chosen": scales[best],
                             "metrics": {m: [cells[best][key][m], cells[0][key][m]] for m in METRICS}}
        print(f"{run.name}: " + " ".join(f"{s:g}:{v:.2f}" for s, v in zip(scales, scores)) + f" -> {scales[best]:g}",
              flush=True)
    print(f"\n{len(chosen)} runs; chosen scales: " + ", ".join(
        f"{s:g} ×{sum(r['chosen'] == s for r in records.values())}" for s in scales))
    print(*summary(records), sep="\n")
    if args.cells_out:
        from lego_inversion.atomic import atomic_write_json

        (args.cells_out / "cells").mkdir(parents=True, exist_ok=True)
        for (concept, seed), cell in chosen.items():
            atomic_write_json(args.cells_out / "cells" / f"{concept}-{args.method}-{seed}.json", cell)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
