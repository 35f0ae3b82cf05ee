"""The shipped category lists (data/vocab/, see SOURCES.md there): the candidate vocabulary the embedded
association backend draws novel names from (LVIS, COCO-Stuff's stuff classes, Objects365, Open Images), the
scene-frequency metadata it ranks them by (LVIS v1 image counts, COCO-Stuff's stuff classes), and the COCO
panoptic preset with its official category ids and thing/stuff flags. In `shared/` because the API (presets),
association (candidates) and curation (official ids, isthing) all read them.

No evaluation benchmark's label list (ADE20K, Pascal Context, Cityscapes: the trainer's evaluation
vocabularies) is a source here: proposing exactly the classes a model is scored on would leak the test.
tests/association/test_candidate_sources.py holds every file below to that."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .schemas import normalise_name

VOCAB_FILES = ("lvis.txt", "coco_stuff.txt", "objects365.txt", "openimages.txt")
LVIS_IMAGE_COUNTS = "lvis_v1_image_count.tsv"
STUFF_FILE = "coco_stuff.txt"


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


@lru_cache(maxsize=1)
def lvis_image_counts() -> dict[str, int]:
    """LVIS v1 category name (as in lvis.txt) -> the number of LVIS v1 training images it is annotated in."""
    rows = [line for line in _read(LVIS_IMAGE_COUNTS) if not line.startswith("#")]
    if rows[:1] != ["name\timage_count\tfrequency"]:
        raise RuntimeError(f"{LVIS_IMAGE_COUNTS}: the header row 'name, image_count, frequency' is missing")
    out = {}
    for row in rows[1:]:
        name, count, _ = row.split("\t")
        out[name] = int(count)
    return out


@lru_cache(maxsize=1)
def stuff_classes() -> tuple[str, ...]:
    """COCO-Stuff's stuff classes, as names (coco_stuff.txt)."""
    return tuple(_read(STUFF_FILE))


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
