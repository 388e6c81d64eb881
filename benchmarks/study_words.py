"""Choice of positive/negative words for the Context Loss (Lego §5.6), on the toy world, oracle-scored.

    PYTHONPATH=src python3 benchmarks/study_words.py --out runs/studies --concepts melted_cube crumpled_pyramid \
        --seeds 0 --steps 150 --images 4          # the reduced run of docs/studies.md
    PYTHONPATH=src python3 benchmarks/study_words.py --out runs/studies --concepts melted_cube crumpled_pyramid \
        three_stars sleeping_heart waving_ball frozen_bear --seeds 0 1 2      # full size (the model's steps)

Four conditions, each a Lego inversion of the same exemplars (method `lego` unless said):
    hand     the example's hand-picked positives / negatives (its concept.toml)
    wordnet  `lexicon.suggest_for_backbone(init word, model)`: WordNet synonyms / antonyms ranked in the model's
             embedding table, as many as the hand-picked lists (a list WordNet leaves empty keeps the hand one)
    random   random whole-word vocabulary tokens of the model's tokenizer, seeded (--word-seed), as many as the
             hand-picked lists, none of them the concept's own words
    none     no Context Loss (λ = 0): method ss-only, i.e. Subject Separation alone
Each (concept, condition, seed) cell is scored like benchmarks/toyworld_ablation.py (concept success, leakage,
fidelity, clean hit over the new target subjects); results (95% bootstrap CIs over cells) go to
OUT/words/results.md|json and OUT/words/plot.png. Derived concept folders: OUT/concepts/<concept>-<condition>/
(their concept.toml holds the words used). Cells are saved as they finish; rerunning continues.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_common import Study, UserError, common_args, derive_concept, example_of, main_wrapper

CONDITIONS = ("hand", "wordnet", "random", "none")
WORD_RE = r"^[a-z]{3,}$"


def vocabulary_words(tokenizer) -> list[str]:
    """Whole-word, alphabetic, ≥ 3-letter tokens of the tokenizer's vocabulary, sorted (deterministic)."""
    import re

    pattern = re.compile(WORD_RE)
    return sorted(w for w in tokenizer.get_vocab() if pattern.match(w))


def random_words(vocab: list[str], n: int, seed: int, salt: str, exclude=()) -> list[str]:
    """n distinct words drawn from `vocab` with a generator seeded by (seed, salt): same arguments, same words."""
    if n < 1:
        return []
    salt_int = int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, salt_int])
    excluded = {w.lower() for w in exclude}
    pool = [w for w in vocab if w not in excluded]
    if len(pool) < n:
        raise UserError(f"the vocabulary has only {len(pool)} usable words; {n} asked")
    return [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]


def embeddable(words: list[str], backbone) -> None:
    """UserError unless every word embeds in every text encoder of the model (backbones.tokens.words_to_rows)."""
    from lego_inversion.backbones.tokens import words_to_rows

    for slot in backbone.slots:
        try:
            words_to_rows(list(words), slot.tokenizer, slot.base_table)
        except ValueError as exc:
            raise UserError(str(exc)) from None


def words_for(ex, condition: str, backbone, word_seed: int) -> tuple:
    """The example's tokens with the condition's positives / negatives (hand: unchanged)."""
    from lego_inversion.lexicon import suggest_for_backbone

    tokens = []
    for t in ex.tokens:
        pos, neg = list(t.positives), list(t.negatives)
        if condition == "wordnet":
            try:
                found = suggest_for_backbone(t.init, backbone, limit=max(len(pos), len(neg)))
                pos = list(found.positives[:len(pos)]) or pos
                neg = list(found.negatives[:len(neg)]) or neg
            except UserError:  # WordNet does not know the word: keep the hand-picked lists
                pass
        elif condition == "random":
            vocab = vocabulary_words(backbone.slots[0].tokenizer)
            own = {t.init, *t.positives, *t.negatives}
            drawn = random_words(vocab, len(pos) + len(neg), word_seed, f"{ex.name}{t.token}", exclude=own)
            pos, neg = drawn[:len(pos)], drawn[len(pos):]
        embeddable(pos + neg, backbone)
        tokens.append(dataclasses.replace(t, positives=tuple(pos), negatives=tuple(neg)))
    return tuple(tokens)


def concept_folders(study: Study, folders: list[Path], word_seed: int) -> dict[tuple[str, str], Path]:
    """(concept name, condition) -> the concept folder to train on; writes the wordnet / random folders."""
    from lego_inversion.backbones import load_backbone
    from lego_inversion.toyworld.examples import concept_toml

    backbone = load_backbone(None)
    out = {}
    for folder in folders:
        ex = example_of(folder)
        out[(folder.name, "hand")] = out[(folder.name, "none")] = folder
        for cond, tag in (("wordnet", "wordnet"), ("random", f"random{word_seed}")):
            derived = dataclasses.replace(ex, tokens=words_for(ex, cond, backbone, word_seed))
            out[(folder.name, cond)] = derive_concept(folder, study.concepts / f"{folder.name}-{tag}",
                                                      toml_text=concept_toml(derived))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = common_args(__doc__.splitlines()[0])
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--word-seed", type=int, default=0, help="seed of the random words")
    args = ap.parse_args(argv)
    from study_common import resolve_concepts

    study = Study("words", args, argv)
    folders = resolve_concepts(args.concepts)
    where = concept_folders(study, folders, args.word_seed)
    jobs = [(f"{f.name}-{c}-{s}", {"concept": f.name, "condition": c, "seed": s})
            for f in folders for c in args.conditions for s in args.seeds]
    todo = [j for j in jobs if not (study.dir / "cells" / f"{j[0]}.json").is_file()]
    lego = sorted({where[(j[1]["concept"], j[1]["condition"])] for j in todo if j[1]["condition"] != "none"})
    plain = sorted({where[(j[1]["concept"], "none")] for j in todo if j[1]["condition"] == "none"})
    for method, group in (("lego", lego), ("ss-only", plain)):
        if group:
            study.train(group, [method])
    from lego_inversion.sweep import run_name

    def compute(cell: dict) -> dict:
        folder = where[(cell["concept"], cell["condition"])]
        method = "ss-only" if cell["condition"] == "none" else "lego"
        run = study.runs / run_name(folder, method, cell["seed"])
        result = study.concept_cell(run, folder, cell["seed"])
        return result | {"run": str(run)}

    cells = study.run_cells(jobs, compute)
    table = study.report(cells, list(args.conditions),
                         title="Positive/negative words for the Context Loss (Lego §5.6), toy world, oracle-scored",
                         baseline="hand")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main_wrapper("words", main, sys.argv[1:]))
