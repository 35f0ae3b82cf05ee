"""The shipped category lists (data/vocab/, see SOURCES.md there): the candidate vocabulary the embedded
association backend draws novel names from (LVIS, ADE20K-847, Objects365, Open Images), and the COCO panoptic
preset with its official category ids and thing/stuff flags. In `shared/` because the API (presets),
association (candidates) and curation (official ids, isthing) all read them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .schemas import normalise_name

VOCAB_FILES = ("lvis.txt", "ade20k_847.txt", "objects365.txt", "openimages.txt")


def _read(name: str) -> list[str]:
    path = resources.files("dreammask.shared") / "data" / "vocab" / name
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@lru_cache(maxsize=1)
def candidate_vocabulary() -> tuple[str, ...]:
    """All shipped names, de-duplicated by their normalised form, in file order."""
    seen, out = set(), []
    for f in VOCAB_FILES:
        for name in _read(f):
            key = normalise_name(name)
            if key and key not in seen:
                seen.add(key)
                out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class PresetCategory:
    name: str
    isthing: bool
    id: int  # the dataset's own (official) category id


@lru_cache(maxsize=1)
def coco_panoptic_categories() -> tuple[PresetCategory, ...]:
    """The 133 COCO panoptic categories in the official order, with their official ids (1..200, gaps)."""
    names = _read("coco_panoptic.txt")
    things = [line == "1" for line in _read("coco_panoptic_isthing.txt")]
    ids = [int(line) for line in _read("coco_panoptic_ids.txt")]
    if not len(names) == len(things) == len(ids) == 133:
        raise RuntimeError("the shipped COCO panoptic category list is incomplete")
    return tuple(PresetCategory(n, t, i) for n, t, i in zip(names, things, ids))


def coco_panoptic() -> tuple[tuple[str, ...], tuple[bool, ...]]:
    cats = coco_panoptic_categories()
    return tuple(c.name for c in cats), tuple(c.isthing for c in cats)


# Preset name -> its categories (name, isthing, official id).
PRESET_CATEGORIES = {"coco_panoptic": coco_panoptic_categories}
PRESETS = {name: (lambda f=f: [c.name for c in f()]) for name, f in PRESET_CATEGORIES.items()}
