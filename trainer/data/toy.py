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


# A toy world with base classes (in real and synthetic data) and novel classes (synthetic only), for the
# IAT benchmark: (dataset id, name, isthing, is_novel, colour). Odd ids are discs, even ids boxes.
IAT_TOY_CATEGORIES = [
    (1, "sky", False, False, (90, 150, 230)),
    (2, "grass", False, False, (60, 170, 60)),
    (3, "cat", True, False, (220, 120, 40)),
    (4, "table", True, False, (140, 90, 60)),
    (5, "kite", True, True, (230, 220, 60)),
    (6, "awning", True, True, (200, 40, 160)),
]

DOMAINS = ("real", "synthetic")


def _hue_rotation(angle: float) -> np.ndarray:
    """3x3 rotation of RGB about the grey axis (Rodrigues): a hue shift that keeps brightness."""
    k = np.ones(3) / np.sqrt(3.0)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


# Hue rotation of the "synthetic" look at style_gap 1 (it scales with the gap; the other traits saturate
# at 1). A global, invertible colour change, like a renderer's palette: the classes keep their shapes and
# their colour order, but a synthetic object's colour is not the colour of the same object photographed.
SYNTHETIC_HUE_DEGREES = 60.0


def _domain_colours(image: np.ndarray, rng: np.random.Generator, domain: str,
                    style_gap: float = 1.0) -> np.ndarray:
    """The "real" domain keeps the palette with camera-like noise. The "synthetic" domain looks rendered:
    hues rotated by style_gap * SYNTHETIC_HUE_DEGREES, more saturated, a stripe texture and less noise;
    style_gap 0 draws synthetic images exactly in the real style (the oracle of bench/iat_toy.py).
    Both domains draw the same random numbers, so a dataset's layouts do not depend on its style."""
    if domain not in DOMAINS:
        raise ValueError(f"domain {domain!r} is not one of {DOMAINS}")
    if style_gap < 0:
        raise ValueError(f"style_gap must be >= 0, got {style_gap}")
    noise = rng.standard_normal(image.shape)
    if domain == "real" or style_gap == 0:
        return image + 8.0 * noise
    g = min(float(style_gap), 1.0)
    out = image @ _hue_rotation(np.deg2rad(SYNTHETIC_HUE_DEGREES * style_gap)).T
    mean = out.mean(-1, keepdims=True)
    out = mean + (1.0 + 0.6 * g) * (out - mean)
    yy = np.arange(image.shape[0])[:, None, None]
    out = out + 18.0 * g * np.sin(yy * 1.3)
    return out + (8.0 - 6.0 * g) * noise


def draw_scene(size: int, rng: np.random.Generator, categories=TOY_CATEGORIES, max_things: int = 2,
               domain: str = "real", style_gap: float = 1.0):
    """(image HxWx3 uint8, ids HxW int64, segments [{id, category_id, isthing}]) with dataset category ids.

    Up to two stuff classes split the picture at a horizon; 1..max_things things are drawn over them."""
    ids = np.zeros((size, size), dtype=np.int64)
    image = np.zeros((size, size, 3), dtype=np.float64)
    segments = []
    stuff = [c for c in categories if not c[2]]
    things = [c for c in categories if c[2]]
    if not stuff and not things:
        raise ValueError("draw_scene needs at least one category")
    horizon = int(rng.integers(size // 3, 2 * size // 3))
    next_id = 1
    rows_of = (slice(0, horizon), slice(horizon, size)) if len(stuff) > 1 else (slice(0, size),)
    if len(stuff) > 2:  # more stuff classes than bands: two of them, chosen per scene
        stuff = [stuff[i] for i in rng.choice(len(stuff), size=2, replace=False)]
    for (cid, _name, _thing, _novel, colour), rows in zip(stuff, rows_of):
        ids[rows] = next_id
        image[rows] = colour
        segments.append({"id": next_id, "category_id": cid, "isthing": 0})
        next_id += 1
    for _ in range(int(rng.integers(1, max_things + 1)) if things else 0):
        next_id = paint_thing(image, ids, segments, next_id, things[int(rng.integers(len(things)))], rng)
    return finish_scene(image, ids, segments, rng, domain, style_gap)


def paint_thing(image: np.ndarray, ids: np.ndarray, segments: list, next_id: int, category, rng) -> int:
    """One instance of `category` (odd ids: a disc; even ids: a box) at a random place and size, over what is
    there; returns the next segment id. The random draws (radius, then centre) are part of every seeded
    toy figure: keep their order."""
    cid, _name, _thing, _novel, colour = category
    size = ids.shape[0]
    r = int(rng.integers(size // 8, size // 4))
    cy, cx = (int(v) for v in rng.integers(r, size - r, size=2))
    yy, xx = np.ogrid[0:size, 0:size]
    if cid % 2:
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        m = (abs(yy - cy) <= r) & (abs(xx - cx) <= r * 3 // 4)
    ids[m] = next_id
    image[m] = colour
    segments.append({"id": next_id, "category_id": cid, "isthing": 1})
    return next_id + 1


def finish_scene(image: np.ndarray, ids: np.ndarray, segments: list, rng, domain: str, style_gap: float):
    """The domain's look applied, segments hidden behind others dropped: (image uint8, ids, segments)."""
    image = _domain_colours(image, rng, domain, style_gap)
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s["id"] in present]
    return np.clip(image, 0, 255).astype(np.uint8), ids, segments


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_toy_dataset(store: ObjectStore, dataset_id: str, num_images: int = 4, size: int = 48, seed: int = 0,
                      is_synthetic: bool = True, categories=TOY_CATEGORIES, job_id: str = "toy-job",
                      domain: str | None = None, max_things: int = 2, style_gap: float = 1.0) -> DatasetManifest:
    """domain: how the images look, "real" (the default, whatever is_synthetic says) or "synthetic";
    style_gap: how far the synthetic look is from the real one (0 = the real style, 1 = the default)."""
    domain = domain or "real"
    rng = np.random.default_rng(seed)
    scenes = [draw_scene(size, rng, categories, max_things=max_things, domain=domain, style_gap=style_gap)
              for _ in range(num_images)]
    return write_scenes(store, dataset_id, scenes, size, categories, is_synthetic=is_synthetic, job_id=job_id)


def write_scenes(store: ObjectStore, dataset_id: str, scenes: list, size: int, categories,
                 is_synthetic: bool = True, job_id: str = "toy-job") -> DatasetManifest:
    """Drawn scenes ([(image, ids, segments)] as `draw_scene` gives them) written in the export layout: images,
    id PNGs, COCO panoptic and instances JSON, the manifest last."""
    from pycocotools import mask as mask_utils

    images, annotations, instances = [], [], []
    ann_id = 1
    for i, (image, ids, segments) in enumerate(scenes):
        scene = keys.scene_id(i)
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
        images=len(scenes), instances=len(instances),
        files={"coco_panoptic": keys.dataset_file(dataset_id, keys.COCO_PANOPTIC),
               "coco_instances": keys.dataset_file(dataset_id, keys.COCO_INSTANCES)},
        is_synthetic=is_synthetic,
    )
    store.put_json(keys.dataset_manifest(dataset_id), manifest)
    return manifest


def register_toy_real_dataset(root, name: str, num_images: int = 4, size: int = 48, seed: int = 100,
                              categories=TOY_CATEGORIES, max_things: int = 2) -> str:
    """Write a toy dataset as plain COCO panoptic files under `root` (is_synthetic False, real domain) and
    register it in the catalog under `name`, like a real dataset on disk (replaces an earlier registration)."""
    from pathlib import Path

    from dreammask.shared.storage import LocalObjectStore

    from .register_coco_panoptic import register_coco_panoptic_dataset

    write_toy_dataset(LocalObjectStore(root), name, num_images, size, seed, is_synthetic=False,
                      categories=categories, max_things=max_things)
    base = Path(root) / keys.dataset_prefix(name)
    register_coco_panoptic_dataset(name, base / keys.COCO_PANOPTIC, base / keys.IMAGES_DIR,
                                   base / keys.PANOPTIC_DIR, replace=True)
    return name


def toy_categories_like(manifest: DatasetManifest, palette_seed: int = 0) -> list[tuple]:
    """Toy categories with the ids, names and thing flags of a curated dataset's classes that are not
    novel (the training classes real data has), each with its own colour, for a real-domain set beside it."""
    rng = np.random.default_rng(palette_seed)
    base = [c for c in manifest.categories if not c.is_novel] or list(manifest.categories)
    return [(int(c.id), c.name, bool(c.isthing), False, tuple(int(v) for v in rng.integers(30, 226, size=3)))
            for c in base]


def register_real_toy_beside(store: ObjectStore, dataset_id: str, root, num_images: int = 6, size: int = 64,
                             seed: int = 7) -> str:
    """A small real-domain toy dataset over the non-novel classes of curated dataset `dataset_id`, written
    under `root` and registered in the catalog; returns its catalog name. Trained beside the curated
    (synthetic) dataset it fills the IAT memory bank with real features, so the SRA loss has prototypes."""
    from .synthetic import load_manifest

    manifest = load_manifest(store, dataset_id)
    return register_toy_real_dataset(root, f"toy_real_for_{dataset_id}", num_images, size, seed,
                                     categories=toy_categories_like(manifest))
