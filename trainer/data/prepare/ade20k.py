"""ADE20K-150 (SceneParsing, ADEChallengeData2016) from its official release, as FC-CLIP's
prepare_ade20k_sem_seg.py and prepare_ade20k_pan_seg.py do.

Reads, under the datasets root:
  ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
  ADEChallengeData2016/annotations/{training,validation}/ADE_*.png          0 = other, 1..150 the classes
  ADEChallengeData2016/annotations_instance/{training,validation}/ADE_*.png R = instance class 1..100 (0 none),
                                                                             G = instance id (0 none)
    (the instance release, annotations_instance.tar of the SceneParsing challenge, unpacked into
    ADEChallengeData2016/; needed for the panoptic set only)
Writes:
  ADEChallengeData2016/annotations_detectron2/<split>/ADE_*.png   label - 1, "other" -> 255 (uint8 wrap)
  ADEChallengeData2016/ade20k_panoptic_<val|train>.json and ade20k_panoptic_<val|train>/ADE_*.png:
    stuff segments from the semantic map (one per class), then every instance pasted over them with its
    SceneParse150 class (instance class -> class by Mask2Former's ade20k_instance_catid_mapping.txt);
    category ids 0..149, isthing as FC-CLIP's ADE20K_150_CATEGORIES.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..vocabulary import load_vocabulary_file
from .common import PanopticWriter, need, root_of, save_label_map

ADE = "ADEChallengeData2016"
SPLITS = {"val": "validation", "train": "training"}
_MAPPING = Path(__file__).with_name("ade20k_instance_to_sceneparse150.txt")


def instance_to_class() -> dict[int, int]:
    """Instance class (0-based, R - 1) -> SceneParse150 class (0-based)."""
    rows = [line.split("\t") for line in _MAPPING.read_text().splitlines() if line and not line.startswith("#")]
    return {int(a) - 1: int(b) - 1 for a, b in rows}


def categories() -> list[dict]:
    vf = load_vocabulary_file("ade20k_150")
    return [{"id": i, "name": syns[0], "isthing": int(bool(t))} for i, syns, t in zip(vf.dataset_ids, vf.synonyms, vf.isthing)]


def prepare_semantic(root=None, splits=("val",)) -> int:
    base = root_of(root) / ADE
    n = 0
    for split in splits:
        folder = SPLITS[split]
        src = need(base / "annotations" / folder, "download ADEChallengeData2016.zip (SceneParsing) and unzip it "
                                                  "in the datasets root")
        for png in sorted(src.glob("*.png")):
            labels = np.asarray(Image.open(png))
            if labels.dtype != np.uint8:
                raise ValueError(f"{png}: expected a uint8 label map, got {labels.dtype}")
            save_label_map(labels - np.uint8(1), base / "annotations_detectron2" / folder / png.name)  # 0 -> 255
            n += 1
    return n


def prepare_panoptic(root=None, splits=("val",)) -> int:
    base = root_of(root) / ADE
    cats = categories()
    thing = {c["id"] for c in cats if c["isthing"]}
    to_class = instance_to_class()
    n = 0
    for split in splits:
        folder = SPLITS[split]
        images = need(base / "images" / folder, "download ADEChallengeData2016.zip and unzip it in the datasets root")
        semantic = need(base / "annotations" / folder, "download ADEChallengeData2016.zip")
        instance = need(base / "annotations_instance" / folder,
                        "download annotations_instance.tar (SceneParsing instance annotations) and unpack it into "
                        f"{base}")
        writer = PanopticWriter(base / f"ade20k_panoptic_{split}", cats)
        for jpg in sorted(images.glob("*.jpg")):
            stem = jpg.stem
            sem = np.asarray(Image.open(semantic / f"{stem}.png")).astype(np.int64) - 1  # -1: other
            ins = np.asarray(Image.open(instance / f"{stem}.png").convert("RGB"))
            if sem.shape != ins.shape[:2]:
                raise ValueError(f"{stem}: semantic map {sem.shape} and instance map {ins.shape[:2]} differ")
            ids = np.zeros(sem.shape, dtype=np.int64)
            segments, next_id = [], 1
            for c in np.unique(sem):  # stuff first: one segment per class
                if c < 0 or c in thing:
                    continue
                ids[sem == c] = next_id
                segments.append({"id": next_id, "category_id": int(c), "iscrowd": 0})
                next_id += 1
            ins_class = ins[..., 0].astype(np.int64) - 1
            ins_id = ins[..., 1].astype(np.int64)
            for k in np.unique(ins_id):  # then every instance, pasted over
                if k == 0:
                    continue
                mask = ins_id == k
                classes = np.unique(ins_class[mask])
                if len(classes) != 1 or int(classes[0]) not in to_class:
                    raise ValueError(f"{stem}: instance {k} has classes {classes.tolist()}")
                ids[mask] = next_id
                segments.append({"id": next_id, "category_id": to_class[int(classes[0])], "iscrowd": 0})
                next_id += 1
            writer.add(stem, jpg.name, sem.shape[0], sem.shape[1], ids, segments, f"{stem}.png")
            n += 1
        writer.write(base / f"ade20k_panoptic_{split}.json")
    return n


def prepare(root=None, splits=("val",)) -> dict:
    return {"semantic": prepare_semantic(root, splits), "panoptic": prepare_panoptic(root, splits)}
