"""What a concept's `with` prompt template draws on its own, before any token is learned (docs: inversion_quality (f)).

    PYTHONPATH=src python3 benchmarks/template_probe.py --concepts examples/* benchmarks/heldout/*
    PYTHONPATH=src python3 benchmarks/template_probe.py --concepts examples/waving_ball \\
        --fill "one hand up" --template "a photo of a {subject} with {concept} arms"

Every word of the template outside `{concept}` conditions the model at training and at generation, and no
learned token can take it back. If those words alone draw a look of the concept (on the toy model, "arms" in
"a photo of a ball with {concept} arms" draws both arms raised, the generic variant, in 11 of 12 images), the
learned token has to fight the template, and the personalized look becomes unreachable. For each concept folder
this fills the slot with nothing, with the tokens' initializer words, with the look's neutral description (the
toy world's VARIANT_CAPTIONS, the upper bound of (a)) and with each `--fill`, generates `--images` images per
new target subject (the ablation's targets and noise seeds `1000 * seed + i`), and prints what the oracle reads:
the share of images with the concept in any variant (`concept`) and with the personalized look (`look`; for a
count, a pile of the exemplar's number).
A template fit for inversion draws the concept rarely with the slot empty.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def slot_readings(backbone, oracle, template: str, truth: dict, fills: dict[str, str], targets: list[str],
                  n: int, seed: int = 0, guidance: float | None = None) -> dict[str, dict]:
    """Oracle readings of `template` with its {concept} slot filled by each of `fills` (name -> words), on
    `n` images per target subject other than the exemplar's, with the ablation's noise seeds (generated and read
    by `inversion_sweep.read`, one job per filling)."""
    from inversion_sweep import read
    from toyworld_ablation import shows_look

    from lego_inversion.prompts import fill

    subjects = [t for t in targets if t != truth["subject"] for _ in range(n)]
    jobs = [(name, [("transfer", t, " ".join(fill(template, {"subject": t, "concept": words}, "with").split()))
                    for t in subjects], truth, seed) for name, words in fills.items()]
    rows = {}
    for (name, items, _, _), result in zip(jobs, read(backbone, oracle, jobs, guidance)):
        preds = result["predictions"]["transfer"]
        concept = [p["concept"] == truth["concept"] for p in preds]
        look = [shows_look(p, truth) for p in preds]
        seen = collections.Counter(f"{p['concept']}/{p['variant']}" for p in preds)
        rows[name] = {"prompt": items[0][2], "concept": sum(concept) / len(preds), "look": sum(look) / len(preds),
                      "n": len(preds), "seen": dict(seen.most_common(3))}
    return rows


def concept_fills(data: dict, truth: dict, extra: list[str]) -> dict[str, str]:
    """The slot fillings probed for one concept folder: empty, the initializer words, the look's description."""
    from lego_inversion.toyworld.training_data import VARIANT_CAPTIONS

    described = VARIANT_CAPTIONS[(truth["concept"], truth["variant"])]
    fills = {"empty": "", "init": " ".join(c["init"] for c in data["concept"])}
    # the description's words after the subject ("with one hand up"), as a phrase for the slot
    if "{s} " in described:
        fills["description"] = described.split("{s} ", 1)[1]
    return fills | {f"fill:{w}": w for w in extra}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", nargs="+", required=True, help="concept folders with a [toyworld] table")
    ap.add_argument("--template", help="probe this template instead of each folder's `with` prompt")
    ap.add_argument("--fill", nargs="*", default=[], help="more words to put in the {concept} slot")
    ap.add_argument("--images", type=int, default=4, help="images per target subject")
    ap.add_argument("--targets", nargs="+", default=["ball", "star", "bear", "cube"])
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's (3 for the toy model)")
    ap.add_argument("--model", default=None, help="default: the bundled toy model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write every reading here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from lego_inversion.atomic import atomic_write_json
    from lego_inversion.config import InversionConfig
    from lego_inversion.toyworld.oracle import Oracle
    from lego_inversion.trainer import load_training_backbone

    backbone, oracle = load_training_backbone(args.model, InversionConfig()), Oracle.load()
    out = {}
    print("| concept | template | slot | concept drawn | personalized look | oracle reads |\n|---|---|---|---|---|---|")
    for folder in map(Path, args.concepts):
        if not (folder / "concept.toml").is_file():
            continue
        data = tomllib.loads((folder / "concept.toml").read_text())
        truth = data["toyworld"]
        template = args.template or data["prompts"]["with"]
        rows = slot_readings(backbone, oracle, template, truth, concept_fills(data, truth, args.fill),
                             args.targets, args.images, guidance=args.guidance)
        out[folder.name] = {"template": template, "readings": rows}
        for name, r in rows.items():
            seen = ", ".join(f"{k} {v}" for k, v in r["seen"].items())
            print(f"| {folder.name} | `{template}` | {name} | {r['concept']:.2f} | {r['look']:.2f} | {seen} |",
                  flush=True)
    if args.json:
        atomic_write_json(Path(args.json), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
