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
    "coco_stuff.txt": 89,  # COCO-Stuff's 91 stuff classes less solid-other and structural-other
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


def test_lvis_image_counts_match_lvis_and_its_published_bins() -> None:
    """One row per LVIS v1 category in lvis.txt's order; the bins follow LVIS's rule (r: 1-10 training
    images, c: 11-100, f: more) and give LVIS v1's published split of 337 rare, 461 common, 405 frequent."""
    lines = read_lines("lvis_v1_image_count.tsv")
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert rows[0] == ["name", "image_count", "frequency"]
    rows = rows[1:]
    assert [r[0] for r in rows] == read_lines("lvis.txt")
    counts = [int(r[1]) for r in rows]
    assert min(counts) >= 1 and max(counts) < 2000  # federated annotation: no category reaches 2 000
    bins = [r[2] for r in rows]
    assert bins == ["r" if c <= 10 else "c" if c <= 100 else "f" for c in counts]
    assert (bins.count("r"), bins.count("c"), bins.count("f")) == (337, 461, 405)
    # spot checks against the LVIS v1 train counts (air conditioner id 2, awning id 29, baboon id 31)
    by_name = dict(zip([r[0] for r in rows], counts))
    assert (by_name["air conditioner"], by_name["awning"], by_name["baboon"]) == (364, 1395, 1)
