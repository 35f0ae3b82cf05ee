"""Registers COCO panoptic (and any dataset in its format) in the catalog.

Paths follow detectron2's layout under a datasets root (DATASETS.ROOT, $DREAMMASK_DATASETS or
./datasets):
  coco/train2017/*.jpg  coco/panoptic_train2017/*.png  coco/annotations/panoptic_train2017.json
  coco/val2017/...      coco/panoptic_val2017/...       coco/annotations/panoptic_val2017.json
Class lists come from each JSON's categories, so ADE20K-150/847 or Cityscapes panoptic exports in COCO
format register the same way (`register_coco_panoptic_dataset`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .catalog import DatasetCatalog
from .coco_panoptic import load_coco_panoptic_json
from .vocabulary import DATASET_VOCABULARIES

COCO_SPLITS = {
    "coco_2017_train_panoptic": ("coco/train2017", "coco/panoptic_train2017", "coco/annotations/panoptic_train2017.json"),
    "coco_2017_val_panoptic": ("coco/val2017", "coco/panoptic_val2017", "coco/annotations/panoptic_val2017.json"),
    "ade20k_panoptic_val": ("ADEChallengeData2016/images/validation", "ADEChallengeData2016/ade20k_panoptic_val",
                            "ADEChallengeData2016/ade20k_panoptic_val.json"),
}


def datasets_root(root: str | None = None) -> Path:
    return Path(root or os.environ.get("DREAMMASK_DATASETS") or os.environ.get("DETECTRON2_DATASETS") or "datasets")


# Semantic annotations scored instead of the panoptic PNG's classes, where present (detectron2 format:
# prepare_ade20k_sem_seg.py writes ADEChallenge's labels minus one, 255 for "other").
SEMANTIC_ROOTS = {"ade20k_panoptic_val": "ADEChallengeData2016/annotations_detectron2/validation"}


def attach_semantic_annotations(dicts: list[dict], sem_seg_root) -> int:
    """Set `sem_seg_file_name` on each dict whose `<image stem>.png` exists under sem_seg_root; returns how
    many did."""
    root, n = Path(sem_seg_root), 0
    if not root.is_dir():
        return 0
    for d in dicts:
        cand = root / (Path(d["file_name"]).stem + ".png")
        if cand.is_file():
            d["sem_seg_file_name"] = str(cand)
            n += 1
    return n


def register_coco_panoptic_dataset(name: str, json_file, image_root, panoptic_root, *, replace: bool = False,
                                   vocabulary: str | None = None, sem_seg_root=None) -> None:
    """Register a COCO-panoptic-format dataset under `name` (loaded lazily, on first `get`). Its classes take
    FC-CLIP's synonyms from `vocabulary` (a file of data/vocabularies/; default: by the dataset's name);
    semantic ground truth comes from `sem_seg_root` where it holds the image's annotation."""
    if replace:
        DatasetCatalog.remove(name)
    vocabulary = vocabulary or DATASET_VOCABULARIES.get(name)

    def load():
        dicts, meta = load_coco_panoptic_json(json_file, image_root, panoptic_root, name=name)
        if vocabulary:
            meta.with_vocabulary_file(vocabulary)
        if sem_seg_root is not None:
            attach_semantic_annotations(dicts, sem_seg_root)
        return dicts, meta

    DatasetCatalog.register(name, load)


def register_all_coco_panoptic(root: str | None = None) -> None:
    """Register the standard splits under the datasets root (idempotent; a new root replaces the old)."""
    base = datasets_root(root)
    for name, (images, panoptic, json_file) in COCO_SPLITS.items():
        sem = base / SEMANTIC_ROOTS[name] if name in SEMANTIC_ROOTS else None
        register_coco_panoptic_dataset(name, base / json_file, base / images, base / panoptic, replace=True,
                                       sem_seg_root=sem)
