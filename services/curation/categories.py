"""The dataset's category list: ids, thing/stuff, origin.

- Training categories of a preset keep the preset's official ids (COCO panoptic: 1..200 with its gaps),
  so the synthetic dataset merges with the real one without remapping; novel categories follow, from the
  next id after the largest. Without a preset, ids are contiguous from 1: training, then novel.
- `dreammask_origin` ("train" or "novel") says where a category comes from; `supercategory` is left to its
  COCO meaning (here the category's own name, as COCO does for classes without a parent).
- `isthing` of a training category comes from the preset (True without one). For a novel category it is
  what the association backend decided (`NovelCategory.isthing`); where the backend left it undecided, the
  rule of `is_stuff_name` applies: stuff when the name's head noun is an amorphous region or material.
"""

from __future__ import annotations

from dreammask.shared.schemas import CategorySet, DatasetCategory, normalise_name
from dreammask.shared.vocabulary import PRESET_CATEGORIES

# Head nouns of amorphous regions and materials (COCO-Stuff's region classes, plus landscape and surface
# words that LVIS, ADE20K and Objects365 names use): a novel category named by one of these is stuff.
STUFF_HEADS = frozenset("""
sky cloud clouds fog smoke mist haze grass lawn meadow field playingfield pasture forest woods jungle
vegetation foliage hedge bushes shrubbery tree trees moss water sea ocean lake river pond waterfall falls
stream wave waves sand beach desert dune dirt mud soil earth ground land gravel rock rocks stone hill
mountain cliff snow ice road street pavement sidewalk path runway railroad track floor flooring ceiling
wall walls carpet rug mat tiles roof fence railing wallpaper paper food fruit vegetables curtain drapery
blanket cloth textile fabric net banner platform stairs staircase stairway counter shelf cabinet
""".split())


def is_stuff_name(name: str) -> bool:
    """The fallback rule: stuff when the last word of the normalised name (its head noun in English
    compounds: "pine forest", "brick wall") is in STUFF_HEADS, or the name carries COCO's stuff markers."""
    raw = name.lower()
    if raw.endswith(("-merged", "-stuff", "-other")):
        return True
    words = normalise_name(name).replace("-", " ").split()
    return bool(words) and words[-1] in STUFF_HEADS


def dataset_categories(cats: CategorySet, preset: str | None) -> list[DatasetCategory]:
    official = {c.name: c for c in PRESET_CATEGORIES[preset]()} if preset in PRESET_CATEGORIES else {}
    out: list[DatasetCategory] = []
    next_id = 1
    for name in cats.train:
        known = official.get(name)
        if known is not None:
            cid, isthing = known.id, known.isthing
        else:
            cid, isthing = next_id, True
        next_id = max(next_id, cid + 1)
        out.append(DatasetCategory(id=cid, name=name, is_novel=False, isthing=int(isthing), dreammask_origin="train"))
    for n in cats.novel:
        isthing = n.isthing if n.isthing is not None else not is_stuff_name(n.name)
        out.append(DatasetCategory(id=next_id, name=n.name, is_novel=True, isthing=int(isthing),
                                   dreammask_origin="novel", nearest_train=n.nearest_train))
        next_id += 1
    return out


def coco_category(c: DatasetCategory) -> dict:
    return {"id": c.id, "name": c.name, "supercategory": c.name, "isthing": c.isthing,
            "dreammask_origin": c.dreammask_origin, "is_novel": c.is_novel,
            **({"nearest_train": c.nearest_train} if c.nearest_train else {})}
