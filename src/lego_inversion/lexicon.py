"""Positive and negative words for a concept token (the Context Loss's P_i and N_i, Eq. 2), proposed by WordNet.

    from lego_inversion.lexicon import suggest_words
    s = suggest_words("melted", slot.tokenizer, slot.base_table, limit=5)   # any tokenizer + its [V, d] table
    s.positives   # synonyms, most similar to "melted" in that table first      -> concept.toml `positives`
    s.negatives   # antonyms, direct antonyms first, then the most similar    -> concept.toml `negatives`
    s.dropped     # {word: why} WordNet words the tokenizer cannot embed (left out of both lists)
    s.details     # {word: Candidate(relation, tier, similarity)} for every kept word

    suggest_for_backbone("melted", backbone)   # SDXL: keeps words that embed in every text encoder, ranks on the first

    lego suggest-words melted [--model M] [--limit 5] [--json]

How words are proposed (docs/words.md has the details and an example): WordNet 3.0's senses of the word, its
inflections resolved by WordNet's own morphology ("melted" -> adjective "melted" and verb "melt"), adjective and
verb senses before noun and adverb senses. Positives are the lemmas of those senses (synonyms), then the
similar-to adjectives, verb groups and participles; negatives are the word's own antonyms, then its synonyms'
antonyms, then indirect antonyms (WordNet links antonyms between head adjectives only: "frozen" (satellite)
~ "cold" <-> "hot"; "melted" <-> "unmelted" ~ "frozen"). Each word then has to embed in the model
(`words_to_rows`), and is ranked by the cosine similarity of its embedding row to the word's own row.

A word that WordNet does not know is a `UserError`: write `positives` / `negatives` by hand in concept.toml.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import UserError
from .wordnet import LEXICON_NAME, Synset, normalize, phrase, wordnet

DEFAULT_LIMIT = 5
log = logging.getLogger(__name__)
MAIN_POS = "av"  # adjective (with satellites) and verb senses come first: Lego's concepts are adjectives/verbs
POS_ORDER = "avnr"


@dataclass(frozen=True)
class Candidate:
    """One proposed word, why WordNet proposes it, and how directly (tier 0 = most direct)."""

    word: str
    relation: str
    tier: int
    similarity: float | None = None  # cosine to the concept word's embedding row, once ranked


@dataclass
class WordSuggestion:
    positives: list[str]
    negatives: list[str]
    dropped: dict[str, str] = field(default_factory=dict)
    details: dict[str, Candidate] = field(default_factory=dict)

    def as_json(self) -> dict:
        """What `lego suggest-words --json` prints (and exactly that)."""
        return {"positives": list(self.positives), "negatives": list(self.negatives)}


# -- proposing words (WordNet only) ------------------------------------------------------------------------------
def lexicon_candidates(word: str) -> tuple[list[Candidate], list[Candidate]]:
    """WordNet's synonyms and antonyms of `word`, unranked, each once (at its most direct tier), never `word`.

    Raises UserError when WordNet has no sense of the word in any part of speech.
    """
    wn = wordnet()
    senses = [(pos, s) for pos in POS_ORDER for s in wn.synsets(word, pos)]
    if not senses:
        raise UserError(f"{word!r} is not in {LEXICON_NAME}, so no words can be proposed for it; write "
                        "`positives = [...]` and `negatives = [...]` for this concept by hand in concept.toml")
    positives: dict[str, Candidate] = {}
    negatives: dict[str, Candidate] = {}
    own = {pos: set(wn.base_forms(word, pos)) for pos in POS_ORDER}  # the word's lemma in each part of speech

    def add(table: dict[str, Candidate], lemma: str, relation: str, tier: int) -> None:
        text = phrase(lemma)
        key = text.lower()
        if key not in table or tier < table[key].tier:
            table[key] = Candidate(text, relation, tier)

    for pos, synset in senses:
        minor = 0 if pos in MAIN_POS else 1  # noun and adverb senses rank one tier lower
        mine = [i for i, lemma in enumerate(synset.lemmas) if normalize(lemma) in own[pos]]
        for lemma in synset.lemmas:
            add(positives, lemma, "synonym", minor)
        for rel, lemma, tier in _related(wn, synset, mine):
            add(positives, lemma, rel, tier + minor)
        for rel, lemma, tier in _opposed(wn, synset, mine):
            add(negatives, lemma, rel, tier + minor)

    self_keys = {phrase(normalize(word)).lower()}
    # A word proposed both ways (e.g. by two different senses) cannot teach the token anything reliable as a
    # negative; synonyms are the more direct relation, so it stays a positive only.
    for key in self_keys | set(positives):
        negatives.pop(key, None)
    for key in self_keys:
        positives.pop(key, None)
    return list(positives.values()), list(negatives.values())


def _related(wn, synset: Synset, mine: list[int]) -> Iterable[tuple[str, str, int]]:
    """(relation, lemma, 1) of words next to the synset: similar-to adjectives, verb groups, participles."""
    for p in synset.pointers:
        if p.symbol == "&":  # head <-> satellite adjectives
            yield from (("similar to", lemma, 1) for lemma in wn.synset(p.pos, p.offset).lemmas)
        elif p.symbol == "$":  # verb group: senses of similar meaning
            yield from (("verb group", lemma, 1) for lemma in wn.synset(p.pos, p.offset).lemmas)
        elif p.symbol == "<" and (p.source == 0 or p.source - 1 in mine):  # adjective that is a verb's participle
            yield "participle of", _target_lemma(wn, p), 1
    # Derivation links ("+") are left out: the word's own verb/adjective already comes in through morphology
    # ("melted" -> "melt"), and the adjectives/verbs they add are capabilities, not synonyms ("meltable",
    # "breakable", "burnable"); their nouns ("melter", "sleeper") are things, not the concept.


def _opposed(wn, synset: Synset, mine: list[int]) -> Iterable[tuple[str, str, int]]:
    """(relation, lemma, tier) of antonyms: the word's own (0), its synonyms' (1), indirect ones (2)."""
    for i in range(len(synset.lemmas)):
        for p in synset.from_lemma(i, "!"):
            yield ("antonym" if i in mine else "antonym of a synonym"), _target_lemma(wn, p), 0 if i in mine else 1
            opposite = wn.synset(p.pos, p.offset)
            if opposite.pos == "a" and i in mine:  # the antonym head's satellites: "melted" <-> "unmelted" ~ "frozen"
                for q in opposite.pointers:
                    if q.symbol == "&":
                        yield from (("indirect antonym", lemma, 2) for lemma in wn.synset(q.pos, q.offset).lemmas)
    if synset.pos == "s":  # a satellite's antonyms are its head's: "frozen" ~ "cold" <-> "hot"
        for p in synset.pointers:
            if p.symbol == "&":
                head = wn.synset(p.pos, p.offset)
                for j in range(len(head.lemmas)):
                    yield from (("indirect antonym", _target_lemma(wn, q), 2) for q in head.from_lemma(j, "!"))


def _target_lemma(wn, pointer) -> str:
    target = wn.synset(pointer.pos, pointer.offset)
    return target.lemmas[pointer.target - 1] if pointer.target else target.lemmas[0]


# -- ranking in a model's embedding space --------------------------------------------------------------------------
def rank_candidates(word: str, candidates: Iterable[Candidate], tokenizer, table,
                    also_embed: Iterable[tuple[object, object]] = ()) -> tuple[list[Candidate], dict[str, str]]:
    """Give each candidate its cosine similarity to `word` in `table`; candidates that do not embed (in `table`
    or in any of the `also_embed` (tokenizer, table) pairs) are returned in the `dropped` dict instead.

    A word embeds when `words_to_rows` accepts it and none of its tokens is the unknown token."""
    import torch

    from .backbones.tokens import words_to_rows

    def embed(text: str, tokenizer, table) -> torch.Tensor:
        row = words_to_rows([text], tokenizer, table)[0]  # ValueError: no token, or only the unknown token
        unk = getattr(tokenizer, "unk_token_id", None)
        if unk is not None and unk in tokenizer(text, add_special_tokens=False)["input_ids"]:
            # "melt down" -> "melt" [UNK]: the row would be half the unknown token's, not the phrase's meaning
            raise ValueError(f"the tokenizer cannot embed all of {text!r} (part of it maps to the unknown token)")
        return row

    try:
        anchor = embed(word, tokenizer, table)
    except ValueError as exc:
        raise UserError(f"cannot rank words for {word!r}: {exc}") from None
    also_embed = list(also_embed)
    kept, dropped = [], {}
    for cand in candidates:
        try:
            row = embed(cand.word, tokenizer, table)
            for other_tokenizer, other_table in also_embed:
                embed(cand.word, other_tokenizer, other_table)
        except ValueError as exc:
            dropped[cand.word] = str(exc)
            continue
        similarity = float(torch.nn.functional.cosine_similarity(row, anchor, dim=0))
        kept.append(Candidate(cand.word, cand.relation, cand.tier, similarity))
    return kept, dropped


def suggest_words(word: str, tokenizer, table, limit: int = DEFAULT_LIMIT, *,
                  also_embed: Iterable[tuple[object, object]] = ()) -> WordSuggestion:
    """Up to `limit` positives (most similar first) and negatives (most direct antonyms first, then most similar)
    for `word`, from WordNet, keeping only words that `tokenizer` can embed in `table` (rows [V, d]).

    Raises UserError if WordNet does not know the word or `limit` < 1. Either list may come back shorter than
    `limit`, or empty (many words have no antonym in WordNet): the caller then needs words written by hand.
    """
    if limit < 1:
        raise UserError(f"the number of suggested words must be at least 1, got {limit}")
    positives, negatives = lexicon_candidates(word)
    ranked_pos, dropped = rank_candidates(word, positives, tokenizer, table, also_embed)
    ranked_neg, dropped_neg = rank_candidates(word, negatives, tokenizer, table, also_embed)
    dropped.update(dropped_neg)
    ranked_pos.sort(key=lambda c: (-c.similarity, c.tier, c.word))
    ranked_neg.sort(key=lambda c: (c.tier, -c.similarity, c.word))
    keep_pos, keep_neg = ranked_pos[:limit], ranked_neg[:limit]
    return WordSuggestion(positives=[c.word for c in keep_pos], negatives=[c.word for c in keep_neg],
                          dropped=dropped, details={c.word: c for c in keep_pos + keep_neg})


def suggest_for_backbone(word: str, backbone, limit: int = DEFAULT_LIMIT) -> WordSuggestion:
    """`suggest_words` on a loaded backbone: ranked in its first text encoder's table, and a word is kept only if
    it embeds in every text encoder (SDXL has two)."""
    first, *others = backbone.slots
    return suggest_words(word, first.tokenizer, first.base_table, limit,
                         also_embed=[(s.tokenizer, s.base_table) for s in others])


def with_context_words(spec, backbone):
    """Fill `positives` / `negatives` that a [[concept]] table leaves out with WordNet's synonyms / antonyms of its
    `init` word, filtered and ranked in the model's own embedding table (lexicon.py); concept.json records them."""
    concepts = []
    for i, c in enumerate(spec.concepts):
        missing = [key for key in ("positives", "negatives") if not getattr(c, key)]
        if missing:
            try:
                found = suggest_for_backbone(c.init, backbone)
            except UserError as exc:
                raise UserError(f"{spec.root / 'concept.toml'}: concept[{i}] has no {' or '.join(missing)} and "
                                f"none can be proposed ({exc}); write them by hand") from None
            filled = {key: tuple(getattr(found, key)) for key in missing}
            empty = [key for key in missing if not filled[key]]
            if empty:
                raise UserError(f"{spec.root / 'concept.toml'}: concept[{i}].{empty[0]}: WordNet proposes none for "
                                f"{c.init!r} that {backbone.model_id} can embed; write them by hand")
            log.warning("%s: concept[%d] (%s) uses suggested %s", spec.root / "concept.toml", i, c.token,
                        "; ".join(f"{key} {list(words)}" for key, words in filled.items()))
            c = dataclasses.replace(c, **filled, suggested=tuple(missing))
        concepts.append(c)
    return dataclasses.replace(spec, concepts=concepts)


# -- lego suggest-words ------------------------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "suggest-words", help="propose positives/negatives (synonyms/antonyms) for a concept word from WordNet",
        description=f"Propose a concept's positive and negative words from {LEXICON_NAME}, keep those the model "
                    "can embed, and rank them by cosine similarity in its text encoder's embedding table.")
    p.add_argument("word", help='the concept word, e.g. "melted" (a phrase is allowed)')
    p.add_argument("--model", default=None, help="diffusers model id or folder (default: the embedded toy model)")
    p.add_argument("--limit", type=_positive_int, default=DEFAULT_LIMIT,
                   help=f"at most this many words in each list (default {DEFAULT_LIMIT})")
    p.add_argument("--json", action="store_true", help='print only {"positives": [...], "negatives": [...]}')
    p.set_defaults(func=run_suggest_words)


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_suggest_words(args) -> int:
    lexicon_candidates(args.word)  # an unknown word fails here, before the model is loaded
    from .backbones import load_backbone
    from .backbones import quiet_progress_bars

    quiet_progress_bars()  # stderr is for the notices below, not for model-loading bars
    backbone = load_backbone(args.model)
    suggestion = suggest_for_backbone(args.word, backbone, args.limit)
    for word, why in suggestion.dropped.items():
        print(f"lego suggest-words: dropped {word!r}: {why}", file=sys.stderr)
    for key, words in (("positives", suggestion.positives), ("negatives", suggestion.negatives)):
        if not words:
            print(f"lego suggest-words: {LEXICON_NAME} has no {key} for {args.word!r} that this model can embed; "
                  f"write `{key} = [...]` by hand", file=sys.stderr)
    if args.json:
        print(json.dumps(suggestion.as_json()))
        return 0
    slot = backbone.slots[0].name
    print(f"# {LEXICON_NAME} words for {args.word!r}, ranked by cosine similarity in the {slot} embedding table "
          f"of {args.model or 'the toy model'}")
    for key, words in (("positives", suggestion.positives), ("negatives", suggestion.negatives)):
        for word in words:
            c = suggestion.details[word]
            print(f"#   {key[:3]}  {word:<24} {c.similarity:+.3f}  {c.relation}")
    print(f"positives = {json.dumps(suggestion.positives)}")
    print(f"negatives = {json.dumps(suggestion.negatives)}")
    return 0


def check_words(spec, backbone, context_words: bool) -> None:
    """Every init word (and, with the Context Loss, every positive / negative) of a concept folder must embed in
    every text encoder of `backbone`; a one-line UserError names the concept.toml field if one does not."""
    from .backbones.tokens import words_to_rows

    where = spec.root / "concept.toml"
    fields = [("subject.init", [spec.subject_init])]
    for i, c in enumerate(spec.concepts):
        fields.append((f"concept[{i}].init", [c.init]))
        if context_words:
            fields += [(f"concept[{i}].positives", list(c.positives)), (f"concept[{i}].negatives", list(c.negatives))]
    for slot in backbone.slots:
        for field_name, words in fields:
            try:
                words_to_rows(words, slot.tokenizer, slot.base_table)
            except ValueError as exc:
                raise UserError(f"{where}: {field_name}: {exc}; use other words") from None
