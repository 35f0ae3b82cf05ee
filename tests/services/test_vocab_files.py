"""The shipped category vocabularies under shared/data/vocab/ are well formed.

Counts are exact: a changed count means a list was edited, which must be deliberate and
recorded in SOURCES.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import dreammask.shared as shared
from dreammask.shared.schemas import check_category_name, normalise_name

VOCAB_DIR = Path(shared.__file__).parent / "data" / "vocab"

EXPECTED_COUNTS = {
    "coco_panoptic.txt": 133,
    "lvis.txt": 1203,
    "ade20k_847.txt": 837,  # 847 classes; 10 repeat an earlier class's first synonym
    "objects365.txt": 365,
    "openimages.txt": 601,  # the V6/V7 boxable class list has 601 rows
}


def read_lines(name: str) -> list[str]:
    text = (VOCAB_DIR / name).read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{name} must end with a newline"
    return text[:-1].split("\n")


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_vocab_file_is_clean(name: str) -> None:
    lines = read_lines(name)
    assert len(lines) == EXPECTED_COUNTS[name]
    assert all(line.strip() for line in lines), f"{name} has an empty line"
    for line in lines:
        # the file must already be in the form the validator returns: no stray spaces, lower case
        assert check_category_name(line) == line
        assert line == line.lower(), f"{name}: {line!r} is not lower case"
    lowered = [line.lower() for line in lines]
    assert len(set(lowered)) == len(lowered), f"{name} repeats a name"
    # JobSpec rejects names that collide after normalise_name, so the lists must not either
    keys = [normalise_name(line) for line in lines]
    assert len(set(keys)) == len(keys), f"{name} has names equal after normalise_name"


def test_coco_panoptic_order_and_isthing() -> None:
    names = read_lines("coco_panoptic.txt")
    flags = read_lines("coco_panoptic_isthing.txt")
    assert names[0] == "person"
    assert names[79] == "toothbrush"
    assert names[80] == "banner"
    assert names[-1] == "rug-merged"
    assert len(flags) == len(names)
    assert set(flags) == {"0", "1"}
    assert flags == ["1"] * 80 + ["0"] * 53


def test_sources_md_states_each_count() -> None:
    sources = (VOCAB_DIR / "SOURCES.md").read_text(encoding="utf-8")
    for name, count in EXPECTED_COUNTS.items():
        assert f"`{name}` | {count} |" in sources, f"SOURCES.md must list {name} with its count {count}"


def test_coco_panoptic_official_ids() -> None:
    from dreammask.shared.vocabulary import coco_panoptic_categories

    cats = {c.name: c for c in coco_panoptic_categories()}
    ids = [c.id for c in coco_panoptic_categories()]
    assert len(set(ids)) == 133 and ids == sorted(ids)
    # spot checks against panopticapi's panoptic_coco_categories.json, including ids after gaps
    assert (cats["person"].id, cats["stop sign"].id, cats["toothbrush"].id) == (1, 13, 90)
    assert (cats["banner"].id, cats["bridge"].id, cats["rug-merged"].id) == (92, 95, 200)
    assert cats["wall-other-merged"].id == 199 and not cats["wall-other-merged"].isthing
