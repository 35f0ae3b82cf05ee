"""The lexical screen every CNA backend shares: WordNet decides what is a training category in disguise.

A candidate is dropped, with its reason, when one of its senses is
- the same synset as a training category's (`synonym of X`: "television set" for "tv");
- below one in the hypernym hierarchy (`kind of X`: "bulldog" for "dog", "cargo ship" for "boat");
- above one (`generalises X`: "vegetable" for "broccoli", "telephone" for "cell phone");
- a part of one whose name says so (`part of X`: "windowpane" of "window", "countertop" of "counter"),
  or any body part when "person" is a training category (COCO labels hands and faces as person);
- the same synset as an earlier kept candidate (`duplicate of Y`: "lightbulb" after "light bulb");
and a name WordNet knows only as something abstract is refused (`not a depictable object`).

Senses: a name's noun senses among its first few, in the lexicographer files of things one can see
(animal, artifact, food, plant, substance, object...); proper names (instance synsets) are skipped. A name
WordNet does not know is judged by its head noun ("cosmetic bag" is a kind of "bag").
`data/lexical/senses.tsv` adds what WordNet's hierarchy misses but the datasets' labels imply (COCO's "cup"
covers mugs, its "boat" covers ships) and pins the sense of training names WordNet lacks ("sports ball").

Thing or stuff (`isthing`): stuff when the name's first visible sense is a substance or material, a
location or region, a landform or body of water, vegetation, the sky, or a ground, floor, road or paved
surface; a thing otherwise. Names WordNet does not know are things.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from dreammask.shared.schemas import normalise_name
from dreammask.shared.vocabulary import coco_panoptic

from .wordnet import PHYSICAL, Synset, WordNet, get_wordnet

# Senses considered: a name's first few (rare senses would drop good names: "crane" the machine is not
# a bird), in files whose members one can see or that name physical things.
CANDIDATE_SENSES = 4
TRAIN_SENSES = 3
RELATION_LEXNAMES = PHYSICAL | {"Tops", "communication"}
ABSTRACT_LEXNAMES = frozenset({"act", "attribute", "cognition", "feeling", "motive", "possession", "process",
                               "quantity", "relation", "state", "time", "event"})
STUFF_LEXNAMES = frozenset({"substance", "location", "phenomenon"})
STUFF_ROOTS = ("body_of_water.n.01", "geological_formation.n.01", "land.n.04", "vegetation.n.01",
               "atmosphere.n.05", "atmospheric_phenomenon.n.01", "road.n.01", "street.n.01", "sidewalk.n.01",
               "paved_surface.n.01", "material.n.01", "floor.n.01", "ground.n.01", "soil.n.02", "grass.n.01",
               "field.n.01", "sky.n.01", "tract.n.01", "wall.n.01", "ceiling.n.01", "rock.n.01")
YOUNG_MAMMAL = "young_mammal.n.01"
PART_LEVELS = 3  # hypernyms of a training thing whose parts are its parts
PERSON = "person.n.01"


@lru_cache(maxsize=1)
def sense_overrides() -> dict[str, tuple[tuple[str, ...], bool]]:
    """name -> (synset keys, replace?) from data/lexical/senses.tsv."""
    path = resources.files("dreammask.services.association") / "data" / "lexical" / "senses.tsv"
    out: dict[str, tuple[tuple[str, ...], bool]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, mode, keys = line.split("\t")[:3]
        if mode not in ("covers", "is"):
            raise ValueError(f"senses.tsv: mode {mode!r} for {name!r} must be 'covers' or 'is'")
        if name.strip().lower() in out:
            raise ValueError(f"senses.tsv: {name!r} has two rows")
        out[name.strip().lower()] = (tuple(k.strip() for k in keys.split(",") if k.strip()), mode == "is")
    return out


def head_noun(name: str) -> str:
    words = name.split()
    if "of" in words[1:]:  # "bottle of water" is a bottle
        return words[words.index("of") - 1]
    return words[-1] if words else name


@dataclass(frozen=True)
class Concept:
    name: str
    senses: tuple[Synset, ...]  # the senses the rules look at
    by_head: bool  # senses are the head noun's: the name is at most a kind of them
    known: bool  # WordNet knows the name itself
    abstract: bool  # known, but only as something abstract


class LexicalScreen:
    """Relations of candidate names to one training set, by WordNet."""

    def __init__(self, train: list[str], wordnet: WordNet | None = None):
        self.wn = wordnet or get_wordnet()
        self.train = list(train)
        self._lock = threading.Lock()
        self._concepts: dict[str, Concept] = {}
        # Offsets of each training sense (with what the dataset's label covers), and of their ancestors.
        self.exact: dict[int, str] = {}
        self.above: dict[int, str] = {}
        self.has_person = False
        self.groups: dict[int, str] = {}  # genus or herd a training animal is a member of
        self.covered: set[int] = set()  # senses a training label covers that are not its name's own
        for t in self.train:
            c = self.concept(t, limit=TRAIN_SENSES, covers=True)
            own = {x.offset for x in self.concept(t, limit=TRAIN_SENSES).senses}
            self.covered |= {x.offset for x in c.senses if x.offset not in own}
            for s in c.senses:
                self.exact.setdefault(s.offset, t)
                if s.offset == self.wn.lookup(PERSON).offset:
                    self.has_person = True
            for s in c.senses:
                if s.lexname == "animal":
                    for h in s.holonyms:
                        self.groups.setdefault(h, t)
                    self.groups.setdefault(s.offset, t)
                if not c.by_head:
                    for a in self.wn.ancestors(s):
                        self.above.setdefault(a, t)
        self.stuff_roots = {self.wn.lookup(k).offset for k in STUFF_ROOTS}
        self.young = self.wn.lookup(YOUNG_MAMMAL).offset
        # Parts of a thing are inside its instance mask; WordNet often lists them under a near hypernym
        # ("windshield" of motor vehicle, so of car) or a kind ("doorknob" of exterior door, so of door).
        self.whole_of_thing: dict[int, str] = {}
        # Where the training list is COCO panoptic's, its own thing/stuff column says which wholes are things.
        names, flags = coco_panoptic()
        known_isthing = dict(zip(names, flags))
        for t in self.train:
            c = self.concept(t, limit=TRAIN_SENSES, covers=True)
            if c.by_head or not known_isthing.get(t, self.isthing(t)):
                continue
            for sense in c.senses:
                self.whole_of_thing.setdefault(sense.offset, t)
                for a in self.wn.ancestor_list(sense)[:PART_LEVELS]:
                    self.whole_of_thing.setdefault(a, t)

    def concept(self, name: str, limit: int = CANDIDATE_SENSES, covers: bool = False) -> Concept:
        key = normalise_name(name)
        cache_key = f"{name.strip().lower()}|{limit}|{covers}"
        with self._lock:
            hit = self._concepts.get(cache_key)
        if hit is not None:
            return hit
        all_senses = self.wn.senses(key)
        known = bool(all_senses)
        senses = _visible(all_senses[:limit])
        abstract = known and not senses and all(s.lexname in ABSTRACT_LEXNAMES for s in all_senses[:limit])
        by_head = False
        overrides = sense_overrides()
        override = overrides.get(key)
        if override is not None and not covers and not override[1]:
            override = None  # what a dataset's label covers matters for training names only
        if override is not None:
            extra = [self.wn.lookup(k) for k in override[0]]
            senses = extra if override[1] else senses + extra
        merged = overrides.get(name.strip().lower()) if covers and name.strip().lower() != key else None
        if merged is not None:  # the dataset's own spelling ("grass-merged") adds that class's merge
            senses = senses + [self.wn.lookup(k) for k in merged[0]]
        if override is None and merged is None and not known:
            head = head_noun(key.replace("-", " ")) if (" " in key or "-" in key) else self._closed_head(key)
            senses = _visible(self.wn.senses(head)[:limit])
            by_head = bool(senses)
        c = Concept(key, tuple(dict.fromkeys(senses)), by_head, known, abstract)
        with self._lock:
            self._concepts[cache_key] = c
        return c

    def _closed_head(self, word: str) -> str:
        """The head of a closed compound WordNet lacks: "beachball" -> "ball" (both halves are nouns)."""
        for i in range(3, len(word) - 2):
            if word[:i] in self.wn.index and word[i:] in self.wn.index:
                return word[i:]
        return ""

    def training_relation(self, name: str) -> str | None:
        """Why a candidate is really a training category, or None when it is not."""
        c = self.concept(name)
        if c.abstract:
            return None  # judged by relevance, not here
        for s in c.senses:
            if s.offset in self.exact and not c.by_head and s.offset not in self.covered:
                return f"synonym of {self.exact[s.offset]}"
        for s in c.senses:  # any sense a training label covers ("mug" the cup, not the face)
            if s.offset in self.covered and not c.by_head:
                return f"kind of {self.exact[s.offset]}"
        # Every visible sense among the first few counts: a name that may mean a training category is
        # dropped (losing a novel name costs less than teaching a training class under another name).
        main = c.senses
        for s in main:
            if s.offset in self.exact:  # unknown compound whose head is a training category
                return f"kind of {self.exact[s.offset]}"
            hit = next((self.exact[a] for a in self.wn.ancestor_list(s) if a in self.exact), None)
            if hit is not None:
                return f"kind of {hit}"
        for s in main:
            # "lamb", "foal", "calf": WordNet files the young under "young mammal", in its parents' genus.
            if s.lexname == "animal" and self.young in self.wn.ancestors(s):
                hit = next((self.groups[h] for h in s.holonyms if h in self.groups), None)
                if hit is not None:
                    return f"kind of {hit}"
        if c.by_head:
            return None  # "high heels" is no heel of a foot: parts and generalisations need the name itself
        for s in main:
            if s.offset in self.above:
                return f"generalises {self.above[s.offset]}"
        for s in main:
            # Parts WordNet lists under a training category ("countertop" of counter), or under a near
            # hypernym or a kind of a training thing (a windshield is part of a motor vehicle, so of a car).
            for h in s.holonyms:
                if h in self.exact:
                    return f"part of {self.exact[h]}"
            for h in self._wholes(s):
                whole = self.wn.synsets[h]
                t = self.whole_of_thing.get(h) or next(
                    (self.exact[a] for a in self.wn.ancestor_list(whole)[:2] if a in self.exact
                     and self.exact[a] in self._thing_names()), None)
                if t is not None:
                    return f"part of {t}"
            if self.has_person and s.lexname == "body":
                return f"part of {self._person_name()}"
        return None

    def _wholes(self, s: Synset) -> list[int]:
        """What a sense is part of: its own part holonyms, for organs its near hypernyms' too (a leaf is a
        plant organ, a plant part is part of a plant), and one step further up the part chain (a headlight is part of
        the electrical system, which is part of a motor vehicle)."""
        # Only organs inherit: a kind of seat is not part of every chair, but a plant organ is part of a plant.
        up = self.wn.ancestor_list(s)[:2] if s.lexname in ("plant", "body") else ()
        first = [h for x in (s.offset, *up) for h in self.wn.synsets[x].holonyms]
        return list(dict.fromkeys(first + [h2 for h in first for h2 in self.wn.synsets[h].holonyms]))

    def _thing_names(self) -> set[str]:
        return set(self.whole_of_thing.values())

    def _person_name(self) -> str:
        return self.exact[self.wn.lookup(PERSON).offset]

    def is_abstract(self, name: str) -> bool:
        return self.concept(name).abstract

    def sense_keys(self, name: str) -> frozenset[int]:
        """Synsets a candidate stands for: two candidates sharing one are duplicates."""
        c = self.concept(name)
        return frozenset() if c.by_head else frozenset(s.offset for s in c.senses)

    def isthing(self, name: str) -> bool:
        c = self.concept(name)
        visible = [s for s in c.senses if s.lexname in PHYSICAL]
        if not visible:
            return True
        s = visible[0]
        if s.lexname in STUFF_LEXNAMES:
            return False
        return not (s.offset in self.stuff_roots or self.wn.ancestors(s) & self.stuff_roots)

    def depictable(self, name: str) -> float:
        """1 for a name whose first sense is something visible, 0.5 when a later one is, 0.25 unknown."""
        c = self.concept(name)
        if not c.known:
            return 0.5 if c.by_head else 0.25
        senses = self.wn.senses(c.name)[:CANDIDATE_SENSES]
        if senses and senses[0].lexname in PHYSICAL:
            return 1.0
        return 0.5 if any(s.lexname in PHYSICAL for s in senses) else 0.0


def _visible(senses: list[Synset]) -> list[Synset]:
    """Senses of things one can see, no proper names; person senses only for a word that names nothing
    else ("woman"), not for "speaker" or "whale" (a big person, in WordNet's first sense)."""
    out = [s for s in senses if s.lexname in RELATION_LEXNAMES and not s.instance]
    if any(s.lexname != "person" for s in out[:2] if s in senses[:2]):
        out = [s for s in out if s.lexname != "person"]
    return out
