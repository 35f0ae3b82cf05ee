"""Small panoptic datasets drawn procedurally, in the platform's export layout.

Tests, the benchmark and the docs' examples use them: each class has its own colour and shape, so a tiny
model can learn them in a few dozen steps. `write_toy_dataset` writes exactly what the curation service
exports under `datasets/{dataset_id}/` (manifest, COCO panoptic + instances JSON, id PNGs, images).
"""

from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
from PIL import Image

from dreammask.shared import keys
from dreammask.shared.schemas import DatasetCategory, DatasetManifest
from dreammask.shared.storage import ObjectStore

from .coco_panoptic import id2rgb

# (dataset id, name, isthing, is_novel, colour)
TOY_CATEGORIES = [
    (1, "sky", False, False, (90, 150, 230)),
    (2, "grass", False, False, (60, 170, 60)),
    (3, "cat", True, False, (220, 120, 40)),
    (4, "awning", True, True, (200, 40, 160)),
]


def draw_scene(size: int, rng: np.random.Generator, categories=TOY_CATEGORIES, max_things: int = 2):
    """(image HxWx3 uint8, ids HxW int64, segments [{id, category_id, isthing}]) with dataset category ids."""
    ids = np.zeros((size, size), dtype=np.int64)
    image = np.zeros((size, size, 3), dtype=np.float64)
    segments = []
    stuff = [c for c in categories if not c[2]]
    things = [c for c in categories if c[2]]
    horizon = int(rng.integers(size // 3, 2 * size // 3))
    next_id = 1
    for (cid, _name, _thing, _novel, colour), rows in zip(stuff, (slice(0, horizon), slice(horizon, size))):
        ids[rows] = next_id
        image[rows] = colour
        segments.append({"id": next_id, "category_id": cid, "isthing": 0})
        next_id += 1
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(1, max_things + 1))):
        cid, _name, _thing, _novel, colour = things[int(rng.integers(len(things)))]
        r = int(rng.integers(size // 8, size // 4))
        cy, cx = (int(v) for v in rng.integers(r, size - r, size=2))
        if cid % 2:  # odd ids: discs; even ids: boxes
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            m = (abs(yy - cy) <= r) & (abs(xx - cx) <= r * 3 // 4)
        ids[m] = next_id
        image[m] = colour
        segments.append({"id": next_id, "category_id": cid, "isthing": 1})
        next_id += 1
    image += rng.normal(0, 8, image.shape)
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s["id"] in present]
    return np.clip(image, 0, 255).astype(np.uint8), ids, segments


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_toy_dataset(store: ObjectStore, dataset_id: str, num_images: int = 4, size: int = 48, seed: int = 0,
                      is_synthetic: bool = True, categories=TOY_CATEGORIES, job_id: str = "toy-job") -> DatasetManifest:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    images, annotations, instances = [], [], []
    ann_id = 1
    for i in range(num_images):
        scene = keys.scene_id(i)
        image, ids, segments = draw_scene(size, rng, categories)
        store.put_bytes(keys.dataset_file(dataset_id, f"{keys.IMAGES_DIR}/{scene}.png"), _png(image), "image/png")
        store.put_bytes(keys.dataset_file(dataset_id, f"{keys.PANOPTIC_DIR}/{scene}.png"), _png(id2rgb(ids)), "image/png")
        images.append({"id": i + 1, "file_name": f"{scene}.png", "width": size, "height": size,
                       "is_synthetic": is_synthetic})
        infos = []
        for s in segments:
            m = ids == s["id"]
            ys, xs = np.nonzero(m)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            infos.append({**s, "area": int(m.sum()), "bbox": bbox, "iscrowd": 0})
            if s["isthing"]:
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                instances.append({"id": ann_id, "image_id": i + 1, "category_id": s["category_id"],
                                  "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                                  "area": int(m.sum()), "bbox": bbox, "iscrowd": 0})
                ann_id += 1
        annotations.append({"image_id": i + 1, "file_name": f"{scene}.png", "segments_info": infos})
    cats = [{"id": cid, "name": name, "isthing": int(thing), "supercategory": "toy"}
            for cid, name, thing, _novel, _c in categories]
    store.put_json(keys.dataset_file(dataset_id, keys.COCO_PANOPTIC),
                   {"images": images, "annotations": annotations, "categories": cats})
    store.put_json(keys.dataset_file(dataset_id, keys.COCO_INSTANCES),
                   {"images": images, "annotations": instances, "categories": [c for c in cats if c["isthing"]]})
    manifest = DatasetManifest(
        dataset_id=dataset_id, job_id=job_id, tenant="toy", created_at=datetime.now(timezone.utc),
        categories=[DatasetCategory(id=cid, name=name, is_novel=novel, isthing=int(thing))
                    for cid, name, thing, novel, _c in categories],
        images=num_images, instances=len(instances),
        files={"coco_panoptic": keys.dataset_file(dataset_id, keys.COCO_PANOPTIC),
               "coco_instances": keys.dataset_file(dataset_id, keys.COCO_INSTANCES)},
        is_synthetic=is_synthetic,
    )
    store.put_json(keys.dataset_manifest(dataset_id), manifest)
    return manifest


def register_toy_real_dataset(root, name: str, num_images: int = 4, size: int = 48, seed: int = 100) -> str:
    """Write a toy dataset as plain COCO panoptic files under `root` (is_synthetic False) and register it
    in the catalog under `name`, like a real dataset on disk (replaces an earlier registration)."""
    from pathlib import Path

    from dreammask.shared.storage import LocalObjectStore

    from .register_coco_panoptic import register_coco_panoptic_dataset

    write_toy_dataset(LocalObjectStore(root), name, num_images, size, seed, is_synthetic=False)
    base = Path(root) / keys.dataset_prefix(name)
    register_coco_panoptic_dataset(name, base / keys.COCO_PANOPTIC, base / keys.IMAGES_DIR,
                                   base / keys.PANOPTIC_DIR, replace=True)
    return name
