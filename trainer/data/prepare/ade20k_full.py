"""ADE20K-847 from the full ADE20K release (ADE20K_2021_17_01), as FC-CLIP's prepare_ade20k_full_sem_seg.py.

Reads, under the datasets root:
  ADE20K_2021_17_01/images/ADE/{validation,training}/**/ADE_{val,train}_*.jpg and their *_seg.png, whose
  class per pixel is R / 10 * 256 + G (the release's object class ids)
  (FC-CLIP walks index_ade20k.pkl for the same file list; the files are found here by their names, so no
  pickle is read)
Writes:
  ADE20K_2021_17_01/images_detectron2/<split>/ADE_*.jpg   shorter side at most 512 (OpenCV bilinear, as FC-CLIP)
  ADE20K_2021_17_01/annotations_detectron2/<split>/ADE_*.tif  uint16 train ids 0..846 of the 847 classes,
                                                              65535 elsewhere (resized with nearest)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .common import need, root_of, save_label_map

FULL = "ADE20K_2021_17_01"
SPLITS = {"val": "validation", "train": "training"}
_IDS = Path(__file__).with_name("ade20k_full_ids.txt")
MAX_SIZE = 512


def class_to_train_id() -> dict[int, int]:
    rows = [line.split("\t") for line in _IDS.read_text().splitlines() if line and not line.startswith("#")]
    return {int(ade_id): int(train_id) for train_id, ade_id, _ in rows}


def class_map(seg_rgb: np.ndarray) -> np.ndarray:
    """The release's object class of every pixel of a *_seg.png."""
    r, g = seg_rgb[..., 0], seg_rgb[..., 1]
    return (r / 10).astype(np.int32) * 256 + g.astype(np.int32)


def _resized_size(h: int, w: int) -> tuple[int, int] | None:
    if w >= h > MAX_SIZE:
        return MAX_SIZE, round(w / float(h) * MAX_SIZE)
    if h >= w > MAX_SIZE:
        return round(h / float(w) * MAX_SIZE), MAX_SIZE
    return None


def prepare(root=None, splits=("val",)) -> dict:
    base = root_of(root) / FULL
    lut_keys = class_to_train_id()
    n = 0
    for split in splits:
        folder = SPLITS[split]
        src = need(base / "images" / "ADE" / folder, "download the full ADE20K release (ADE20K_2021_17_01.zip) and "
                                                     "unzip it in the datasets root")
        prefix = f"ADE_{'val' if split == 'val' else 'train'}_"
        for jpg in sorted(src.rglob(f"{prefix}*.jpg")):
            img = np.asarray(Image.open(jpg).convert("RGB"))
            labels = class_map(np.asarray(Image.open(need(jpg.with_name(jpg.stem + "_seg.png"), "its *_seg.png"))
                                          .convert("RGB")))
            size = _resized_size(*img.shape[:2])
            if size is not None:
                img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
            out = np.full(labels.shape, 65535, dtype=np.uint16)
            for value in np.unique(labels):
                if int(value) in lut_keys:
                    out[labels == value] = lut_keys[int(value)]
            image_dir = base / "images_detectron2" / folder
            image_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(image_dir / jpg.name)
            save_label_map(out, base / "annotations_detectron2" / folder / f"{jpg.stem}.tif")
            n += 1
    if n == 0:
        raise FileNotFoundError(f"no ADE_*.jpg under {base / 'images' / 'ADE'}")
    return {"images": n}
