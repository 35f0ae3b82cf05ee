"""Cityscapes (fine annotations) from its official release, as detectron2's preparation (cityscapesscripts'
createPanopticImgs for the panoptic set, createTrainIdLabelImgs for the semantic maps) writes them.

Reads, under the datasets root:
  cityscapes/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png   (leftImg8bit_trainvaltest.zip)
  cityscapes/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png (gtFine_trainvaltest.zip):
    a label id (< 1000) for stuff and for crowd regions of thing classes, label id * 1000 + k for instance k
Writes:
  cityscapes/gtFine/cityscapes_panoptic_<split>.json and cityscapes_panoptic_<split>/*_gtFine_panoptic.png:
    one segment per instanceIds value of an evaluated class (the 19 of the vocabulary file); its id is that
    value, its category the label id; a thing class's value below 1000 is a crowd region; classes ignored in
    evaluation are void.
  cityscapes/gtFine/cityscapes_semantic_<split>/*_leftImg8bit.png: train ids 0..18, 255 elsewhere.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..vocabulary import load_vocabulary_file
from .common import PanopticWriter, need, root_of, save_label_map


def classes() -> tuple[list[dict], dict[int, int], set[int]]:
    """(panoptic categories, label id -> train id, thing label ids) of the 19 evaluated classes."""
    vf = load_vocabulary_file("cityscapes")
    cats = [{"id": i, "name": syns[0], "isthing": int(bool(t))} for i, syns, t in zip(vf.dataset_ids, vf.synonyms, vf.isthing)]
    train_id = {c["id"]: k for k, c in enumerate(sorted(cats, key=lambda c: c["id"]))}
    return cats, train_id, {c["id"] for c in cats if c["isthing"]}


def prepare(root=None, splits=("val",)) -> dict:
    base = root_of(root) / "cityscapes"
    cats, train_id, things = classes()
    lut = np.full(256, 255, dtype=np.uint8)
    for label, t in train_id.items():
        lut[label] = t
    n = 0
    for split in splits:
        gt = need(base / "gtFine" / split, "download gtFine_trainvaltest.zip and unzip it into cityscapes/")
        images = need(base / "leftImg8bit" / split, "download leftImg8bit_trainvaltest.zip and unzip it into cityscapes/")
        writer = PanopticWriter(base / "gtFine" / f"cityscapes_panoptic_{split}", cats)
        for inst_png in sorted(gt.glob("*/*_gtFine_instanceIds.png")):
            city, stem = inst_png.parent.name, inst_png.name[: -len("_gtFine_instanceIds.png")]
            need(images / city / f"{stem}_leftImg8bit.png", "the image of this annotation (leftImg8bit)")
            raw = np.asarray(Image.open(inst_png)).astype(np.int64)
            ids = np.zeros(raw.shape, dtype=np.int64)
            segments = []
            for value in np.unique(raw):
                label = int(value) if value < 1000 else int(value) // 1000
                if label not in train_id:
                    continue  # ignored in evaluation: void
                ids[raw == value] = value
                segments.append({"id": int(value), "category_id": label,
                                 "iscrowd": int(value < 1000 and label in things)})
            writer.add(stem, f"{city}/{stem}_leftImg8bit.png", raw.shape[0], raw.shape[1], ids, segments,
                       f"{stem}_gtFine_panoptic.png")
            labels = np.where(raw < 1000, raw, raw // 1000)
            save_label_map(lut[np.clip(labels, 0, 255)], base / "gtFine" / f"cityscapes_semantic_{split}" / f"{stem}_leftImg8bit.png")
            n += 1
        if not writer.images:
            raise FileNotFoundError(f"no *_gtFine_instanceIds.png under {gt}")
        writer.write(base / "gtFine" / f"cityscapes_panoptic_{split}.json")

    return {"images": n}
