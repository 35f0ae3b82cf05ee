"""Pascal Context 459 and 59 from the official releases, as FC-CLIP's prepare_pascal_ctx_full_sem_seg.py
(459) and prepare_pascal_ctx_sem_seg.py (59) write them.

Reads, under the datasets root:
  VOCdevkit/VOC2010/JPEGImages/*.jpg and VOCdevkit/VOC2010/ImageSets/Main/{val,train}.txt   (PASCAL VOC 2010)
  VOCdevkit/VOC2010/trainval/*.mat   (PASCAL-Context's trainval.tar.gz: `LabelMap`, uint16, 0 unlabelled,
                                      1..459 the classes of its labels.txt)
Writes:
  pascal_ctx_d2/images/<split>/*.jpg
  pascal_ctx_d2/annotations_ctx459/<split>/*.tif  LabelMap - 1, unlabelled -> 65535 (uint16)
  pascal_ctx_d2/annotations_ctx59/<split>/*.png   the 59 classes 0..58 (their 459 ids in FC-CLIP's order),
                                                  everything else -> 255 (uint8)
FC-CLIP derives the 59-class maps with the `detail` API from trainval_merged.json, which keeps the same 59
classes of the same annotations; here they come from the 459-class maps with FC-CLIP's list of those ids.
"""

from __future__ import annotations

import shutil

import numpy as np
import scipy.io

from .common import need, root_of, save_label_map

OUT = "pascal_ctx_d2"
SPLITS = {"val": "validation", "train": "training"}
# The 459-class ids of Pascal Context's 59 classes (0 = background), FC-CLIP's `_mapping` sorted:
# label k of the 59-class maps is the k-th id after 0.
CTX59_IDS = sorted([
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284,
    158, 159, 416, 33, 162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59,
    440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355,
    85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
])


def labels_459(label_map: np.ndarray) -> np.ndarray:
    if label_map.dtype != np.uint16:
        label_map = label_map.astype(np.uint16)
    out = label_map.astype(np.int64) - 1
    out[label_map == 0] = 65535
    return out.astype(np.uint16)


def labels_59(label_map: np.ndarray) -> np.ndarray:
    lut = np.full(65536, 255, dtype=np.uint8)
    for k, i in enumerate(CTX59_IDS[1:]):
        lut[i] = k
    return lut[label_map.astype(np.int64)]


def prepare(root=None, splits=("val",)) -> dict:
    base = root_of(root)
    voc = base / "VOCdevkit" / "VOC2010"
    mats = need(voc / "trainval", "download PASCAL-Context's trainval.tar.gz and unpack it into VOCdevkit/VOC2010/")
    jpgs = need(voc / "JPEGImages", "download VOCtrainval_03-May-2010.tar (PASCAL VOC 2010) and unpack it")
    n = 0
    for split in splits:
        folder = SPLITS[split]
        ids = need(voc / "ImageSets" / "Main" / f"{split}.txt", "PASCAL VOC 2010's split lists").read_text().split()
        for stem in ids:
            mat = need(mats / f"{stem}.mat", "PASCAL-Context's trainval.tar.gz")
            label_map = scipy.io.loadmat(mat)["LabelMap"]
            image_dir = base / OUT / "images" / folder
            image_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(need(jpgs / f"{stem}.jpg", "PASCAL VOC 2010's JPEGImages"), image_dir / f"{stem}.jpg")
            save_label_map(labels_459(label_map), base / OUT / "annotations_ctx459" / folder / f"{stem}.tif")
            save_label_map(labels_59(label_map), base / OUT / "annotations_ctx59" / folder / f"{stem}.png")
            n += 1
    return {"images": n}
