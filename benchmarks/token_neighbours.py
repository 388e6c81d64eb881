"""Where learned concept tokens sit in the text encoder's input-embedding space (docs/inversion_quality.md §d).

    PYTHONPATH=src python3 benchmarks/token_neighbours.py runs/levers/runs/base-* --json runs/levers/words.json

For every run folder (finished, or its checkpoint's rows): each learned concept vector's nearest vocabulary
words (cosine), its norm against the vocabulary's median norm, and its cosine / L2 distance to the initializer
word and to the words of the look's neutral description (toyworld VARIANT_CAPTIONS, the words the model was
trained to draw that look from).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

STOP = {"a", "photo", "of", "with", "the", "s", "p", "n", "that", "is", "one"}


def description_words(concept: str, variant: int) -> list[str]:
    from lego_inversion.toyworld.training_data import VARIANT_CAPTIONS

    text = VARIANT_CAPTIONS[(concept, variant)]
    return [w for w in re.findall(r"[a-z]+", text) if w not in STOP]


def analyse(run: Path, table: torch.Tensor, tokenizer, k: int = 5) -> dict:
    from safetensors.torch import load_file

    from lego_inversion.backbones.tokens import words_to_rows

    info = json.loads((run / "concept.json").read_text())
    if (run / "learned_embeds.safetensors").is_file():
        learned = load_file(str(run / "learned_embeds.safetensors"))
    else:  # an unfinished run: its checkpoint's rows, in the trainer's order (<subj> first, then the concept)
        rows = next(v for k, v in load_file(str(run / "checkpoint.safetensors")).items() if k.startswith("rows/"))
        learned = dict(zip(([info["subject_token"]] if info["subject_token"] else []) + info["tokens"], rows))
    truth = info["toyworld"]
    desc = description_words(truth["concept"], truth["variant"])
    desc_rows = words_to_rows(desc, tokenizer, table)
    vocab = F.normalize(table.float(), dim=-1)
    median_norm = float(table.float().norm(dim=-1).median())
    out = {"run": run.name, "description_words": desc, "median_vocab_norm": round(median_norm, 3), "tokens": {}}
    for token in info["tokens"]:
        v = learned[token].float().reshape(-1)
        base = re.sub(r"_\d+>$", ">", token)
        init_word = base.strip("<>")  # every toy-world concept token is named after its init word
        init = words_to_rows([init_word], tokenizer, table)[0]
        sims = vocab @ F.normalize(v, dim=0)
        top = sims.topk(k)
        desc_cos = F.cosine_similarity(desc_rows, v[None], dim=-1)
        out["tokens"][token] = {
            "nearest": [(tokenizer.convert_ids_to_tokens(int(i)), round(float(s), 3))
                        for s, i in zip(top.values, top.indices)],
            "norm": round(float(v.norm()), 3),
            "init": init_word, "cos_init": round(float(F.cosine_similarity(v, init, dim=0)), 3),
            "l2_init": round(float((v - init).norm()), 3),
            "cos_description": {w: round(float(c), 3) for w, c in zip(desc, desc_cos)},
            "max_cos_description": round(float(desc_cos.max()), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from lego_inversion.backbones import load_backbone

    slot = load_backbone(None).slots[0]
    rows = [analyse(Path(r), slot.base_table, slot.tokenizer) for r in args.runs
            if (Path(r) / "learned_embeds.safetensors").is_file() or (Path(r) / "checkpoint.safetensors").is_file()]
    for r in rows:
        for token, t in r["tokens"].items():
            print(f"{r['run']} {token}: nearest {t['nearest'][:3]} norm {t['norm']} (vocab median "
                  f"{r['median_vocab_norm']}) cos(init {t['init']}) {t['cos_init']} max cos(description) "
                  f"{t['max_cos_description']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
