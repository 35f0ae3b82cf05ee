"""FC-CLIP's prompt-engineered class lists (synonyms per class) and its rule for "seen" classes.

The files under `vocabularies/` (COCO panoptic, ADE20K-150/847, Pascal Context 59/459, Cityscapes) hold
one class a line, `dataset id<TAB>thing<TAB>name,synonym,...`; each names its source in FC-CLIP's
repository in its header. The text classifier embeds every synonym and takes the max over them; a test
class counts as seen in training (out-of-vocabulary weight alpha, not beta) when any of its synonyms is
also a synonym of a training class (FC-CLIP's `category_overlapping_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VOCABULARIES_DIR = Path(__file__).resolve().parent / "vocabularies"

@dataclass
class VocabularyFile:
    name: str
    dataset_ids: list[int]
    synonyms: list[list[str]]  # per class: its name first, then its synonyms
    isthing: list[bool | None]  # None where the file does not say (semantic-only datasets)

    def by_dataset_id(self) -> dict[int, list[str]]:
        return dict(zip(self.dataset_ids, self.synonyms, strict=True))


def available_vocabularies() -> list[str]:
    return sorted(p.stem for p in VOCABULARIES_DIR.glob("*.txt"))


def load_vocabulary_file(name: str) -> VocabularyFile:
    path = VOCABULARIES_DIR / f"{name}.txt"
    if not path.is_file():
        raise ValueError(f"no vocabulary file {name!r}; shipped: {available_vocabularies()}")
    ids, syns, things = [], [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{n}: expected 'id<TAB>thing<TAB>names', got {line!r}")
        ids.append(int(parts[0]))
        things.append(None if parts[1] == "-" else parts[1] == "1")
        syns.append(split_synonyms(parts[2]))
    return VocabularyFile(name, ids, syns, things)


def split_synonyms(names: str) -> list[str]:
    """'road, route' or 'road,route' -> ['road', 'route'] (FC-CLIP's split_labels), duplicates dropped."""
    out: list[str] = []
    for s in names.split(","):
        s = s.strip()
        if s and s not in out:
            out.append(s)
    return out


def _key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


def seen_by_synonyms(test_classes: list[list[str]], train_classes: list[list[str]]) -> list[bool]:
    """Per test class: does any of its synonyms appear among all synonyms of the training classes."""
    train = {_key(s) for syns in train_classes for s in syns}
    return [any(_key(s) in train for s in syns) for syns in test_classes]


def synonyms_dict(classes: list[str], synonyms: list[list[str]]) -> dict[str, list[str]]:
    """The model's set_vocabulary(synonyms=...) form: class name -> its other names."""
    return {c: [s for s in syns if s != c] for c, syns in zip(classes, synonyms, strict=True) if len(syns) > 1}
