"""The shipped vocabulary of category names (LVIS, ADE20K-847, Objects365, Open Images; see data/vocab/SOURCES.md)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from dreammask.shared.schemas import normalise_name

VOCAB_FILES = ("lvis.txt", "ade20k_847.txt", "objects365.txt", "openimages.txt")


def _read(name: str) -> list[str]:
    path = resources.files("dreammask.services.association") / "data" / "vocab" / name
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
def coco_panoptic() -> tuple[tuple[str, ...], tuple[bool, ...]]:
    names = _read("coco_panoptic.txt")
    things = [line == "1" for line in _read("coco_panoptic_isthing.txt")]
    if len(names) != 133 or len(things) != 133:
        raise RuntimeError("the shipped COCO panoptic category list is incomplete")
    return tuple(names), tuple(things)


PRESETS = {"coco_panoptic": lambda: list(coco_panoptic()[0])}
