"""COCO panoptic from its official release: the annotations archive ships each split's PNGs as a zip
beside its JSON; they are unpacked where the trainer reads them (detectron2's layout).

Reads, under the datasets root:
  coco/{train2017,val2017}/*.jpg                                   (train2017.zip, val2017.zip)
  coco/annotations/panoptic_{train2017,val2017}.json and .zip      (panoptic_annotations_trainval2017.zip)
Writes:
  coco/panoptic_{train2017,val2017}/*.png
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from .common import need, root_of


def prepare(root=None, splits=("val", "train")) -> dict:
    base = root_of(root) / "coco"
    out = {}
    for split in splits:
        name = f"panoptic_{split}2017"
        ann = need(base / "annotations" / f"{name}.json",
                   "download panoptic_annotations_trainval2017.zip and unzip it into coco/")
        need(base / f"{split}2017", f"download {split}2017.zip and unzip it into coco/")
        dest = base / name
        archive = base / "annotations" / f"{name}.zip"
        if not (dest.is_dir() and any(dest.glob("*.png"))):
            need(archive, "the PNG archive of panoptic_annotations_trainval2017.zip")
            with zipfile.ZipFile(archive) as z:
                members = [m for m in z.namelist() if m.endswith(".png")]
                dest.mkdir(parents=True, exist_ok=True)
                for m in members:
                    (dest / Path(m).name).write_bytes(z.read(m))
        listed = {a["file_name"] for a in json.loads(ann.read_text())["annotations"]}
        missing = sorted(f for f in listed if not (dest / f).is_file())
        if missing:
            raise FileNotFoundError(f"{len(missing)} PNGs of {ann} are not in {dest}, e.g. {missing[:3]}")
        out[split] = len(listed)
    return out
