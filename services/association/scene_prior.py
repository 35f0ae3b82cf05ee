"""How often a category occurs in real scenes: the prior the embedded CNA backend adds to relatedness.

A proposal is worth images only if the thing appears in the scenes the segmenter will face. Relatedness in
sentence-embedding space alone favours rare, object-centric words (breechcloth, vodka, wooden leg); this
prior favours what photographs of scenes are full of. Its sources are public, non-evaluation metadata
shipped in shared/data/vocab/ (see SOURCES.md there):

- LVIS v1 train: each category's image count and frequency bin (r: 1-10 images, c: 11-100, f: more).
  LVIS annotates federatedly, so the counts saturate near 2 000 images for the most frequent categories;
- COCO-Stuff's 91 stuff classes (89 names): the walls, floors, roads, skies and vegetation of scenes.

A name matches a source's name by its spelling (plural, "/" alternatives as in "cabinet/shelf") or, with
WordNet loaded, when its first visible sense is that name's first visible sense ("couch" and LVIS's "sofa").
The prior (0..1) is log(1 + images) / log(1 + LVIS_FULL) for an LVIS category, STUFF_PRIOR for a stuff
class, the larger of both when a name is in both, and UNKNOWN_PRIOR for a name in neither (an Objects365 or
Open Images class LVIS lacks: it ranks like an LVIS category at the rare/common border). No evaluation
benchmark's label list (ADE20K, Pascal Context, Cityscapes) is read here or anywhere in this service.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from dreammask.shared.schemas import normalise_name
from dreammask.shared.vocabulary import lvis_image_counts, stuff_classes

from .wordnet import PHYSICAL, WordNet

LVIS_FULL = 2000  # LVIS's federated counts stop near here (the most frequent category has 1 977 images)
RARE_MAX = 10  # LVIS's bins: rare up to 10 training images, common up to 100, frequent above
COMMON_MAX = 100
STUFF_PRIOR = 1.0  # stuff fills scenes; COCO-Stuff labels it densely in all of COCO's images
UNKNOWN_PRIOR = math.log1p(RARE_MAX) / math.log1p(LVIS_FULL)  # 0.32: like an LVIS category in 10 images


def frequency_bin(image_count: int) -> str:
    return "r" if image_count <= RARE_MAX else "c" if image_count <= COMMON_MAX else "f"


@dataclass(frozen=True)
class SceneFrequency:
    """What the sources say of one name."""

    lvis_name: str | None = None  # the LVIS category it matched
    image_count: int | None = None  # LVIS v1 train images of that category
    frequency: str | None = None  # its LVIS bin: "f", "c" or "r"
    stuff_name: str | None = None  # the COCO-Stuff stuff class it matched

    @property
    def known(self) -> bool:
        return self.lvis_name is not None or self.stuff_name is not None

    @property
    def scene(self) -> bool:
        """A frequent or common scene category: LVIS bin f or c, or a stuff class (bench/cna.py's measure)."""
        return self.stuff_name is not None or self.frequency in ("f", "c")

    @property
    def prior(self) -> float:
        if not self.known:
            return UNKNOWN_PRIOR
        p = min(1.0, math.log1p(self.image_count) / math.log1p(LVIS_FULL)) if self.image_count is not None else 0.0
        return max(p, STUFF_PRIOR if self.stuff_name is not None else 0.0)

    def describe(self) -> str:
        parts = []
        if self.lvis_name is not None:
            word = {"f": "frequent", "c": "common", "r": "rare"}[self.frequency]
            parts.append(f"in {self.image_count} LVIS training images ({word})")
        if self.stuff_name is not None:
            parts.append("a COCO-Stuff stuff class")
        return ", ".join(parts) if parts else "in no scene-frequency source"


def _alternatives(name: str) -> list[str]:
    """The names a "/"-joined class stands for: "cabinet/shelf" is a cabinet or a shelf; a one-word
    alternative next to a longer one shares its other words ("trash bin/can" is a trash can,
    "cutting/chopping board" a cutting board), and is also tried alone ("tape measure/ruler")."""
    alts = [a.strip() for a in normalise_name(name).split("/") if a.strip()]
    if len(alts) != 2:
        return alts
    (a, b), out = alts, []
    wa, wb = a.split(), b.split()
    if len(wa) == 1 and len(wb) > 1:
        out.append(" ".join([a, *wb[1:]]))
    out.append(a)
    if len(wb) == 1 and len(wa) > 1:
        out.append(" ".join([*wa[:-1], b]))
    out.append(b)
    return list(dict.fromkeys(out))


def _forms(name: str) -> list[str]:
    """Spellings to look a name up by: each alternative, as written and singular."""
    out = []
    for alt in _alternatives(name):
        out.append(alt)
        for suffix, repl in (("ies", "y"), ("es", ""), ("s", "")):
            if alt.endswith(suffix) and len(alt) > len(suffix) + 2:
                out.append(alt[: -len(suffix)] + repl)
    return list(dict.fromkeys(out))


class ScenePrior:
    """Scene frequency of category names; build once per process (scene_prior()), query per job."""

    def __init__(self, wordnet: WordNet | None = None):
        self.wn = wordnet
        # spelling -> (LVIS name, image count); a name as written wins over another's singular form
        counts = lvis_image_counts()
        self.lvis: dict[str, tuple[str, int]] = {normalise_name(n): (n, c) for n, c in counts.items()}
        for name, count in counts.items():
            for f in _forms(name)[1:]:
                self.lvis.setdefault(f, (name, count))
        self.stuff: dict[str, str] = {normalise_name(n): n for n in stuff_classes()}
        for name in stuff_classes():
            for f in _forms(name)[1:]:
                self.stuff.setdefault(f, name)
        self.lvis_sense: dict[int, tuple[str, int]] = {}
        self.stuff_sense: dict[int, str] = {}
        if wordnet is not None:
            for name, count in lvis_image_counts().items():
                s = self._first_sense(name)
                if s is not None and (s not in self.lvis_sense or count > self.lvis_sense[s][1]):
                    self.lvis_sense[s] = (name, count)
            for name in stuff_classes():
                s = self._first_sense(name)
                if s is not None:
                    self.stuff_sense.setdefault(s, name)
        self._lock = threading.Lock()
        self._cache: dict[str, SceneFrequency] = {}

    def _first_sense(self, name: str) -> int | None:
        """The name's first sense that is something one can see (no proper names)."""
        for s in self.wn.senses(normalise_name(name)):
            if s.lexname in PHYSICAL and not s.instance:
                return s.offset
        return None

    def lookup(self, name: str) -> SceneFrequency:
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None:
            return hit
        lvis: tuple[str, int] | None = None
        stuff: str | None = None
        for f in _forms(name):  # the first spelling that matches: as written before singular
            lvis = lvis or self.lvis.get(f)
            stuff = stuff or self.stuff.get(f)
        if self.wn is not None and (lvis is None or stuff is None):
            for alt in _alternatives(name):
                s = self._first_sense(alt)
                if s is None:
                    continue
                if lvis is None and s in self.lvis_sense:
                    lvis = self.lvis_sense[s]
                if stuff is None:
                    stuff = self.stuff_sense.get(s)
        out = SceneFrequency(
            lvis_name=lvis[0] if lvis else None, image_count=lvis[1] if lvis else None,
            frequency=frequency_bin(lvis[1]) if lvis else None, stuff_name=stuff,
        )
        with self._lock:
            self._cache[name] = out
        return out


_lock = threading.Lock()
_priors: dict[int, ScenePrior] = {}


def scene_prior(wordnet: WordNet | None = None) -> ScenePrior:
    """One ScenePrior per process and WordNet (indexing the sources' senses takes a fraction of a second)."""
    key = id(wordnet)
    with _lock:
        if key not in _priors:
            _priors[key] = ScenePrior(wordnet)
        return _priors[key]
