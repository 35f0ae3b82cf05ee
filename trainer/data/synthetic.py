"""The curated synthetic dataset exported by the platform, read from object storage.

Layout under `datasets/{dataset_id}/` (written by the curation service):
  manifest.json               shared.schemas.DatasetManifest (categories with is_novel and isthing)
  annotations/panoptic.json   COCO panoptic; images carry is_synthetic
  panoptic/{scene}.png        id-encoded segments
  images/{scene}.png
The files are copied once into a local cache (skipped when already there with the same size), then read
like any COCO panoptic dataset; every dict carries `is_synthetic` (True unless the export says otherwise).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from dreammask.shared import keys
from dreammask.shared.schemas import DatasetManifest
from dreammask.shared.storage import ObjectNotFound, ObjectStore

from .coco_panoptic import DatasetMetadata, load_coco_panoptic_json


def _dataset_relative(dataset_id: str, key_or_relative: str) -> str:
    prefix = keys.dataset_prefix(dataset_id)
    return key_or_relative[len(prefix):] if key_or_relative.startswith(prefix) else key_or_relative


def _member(folder: str, file_name: str) -> str:
    """A file named in the JSON, relative to the dataset root ("s00001.png" -> "images/s00001.png")."""
    file_name = file_name.lstrip("/")
    return file_name if "/" in file_name else f"{folder}/{file_name}"


def _fetch(store: ObjectStore, key: str, dest: Path) -> None:
    if dest.exists():
        try:
            if dest.stat().st_size == store.size(key):
                return
        except ObjectNotFound:
            pass
    data = store.get_bytes(key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Every process of a machine may fill the same cache at once: each writes its own temporary file and
    # renames it into place (atomic; the copies are identical).
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    tmp.write_bytes(data)
    tmp.replace(dest)


def load_manifest(store: ObjectStore, dataset_id: str) -> DatasetManifest:
    try:
        return store.get_model(keys.dataset_manifest(dataset_id), DatasetManifest)
    except ObjectNotFound:
        raise FileNotFoundError(
            f"dataset {dataset_id!r} has no manifest at {keys.dataset_manifest(dataset_id)}; "
            "is the id right and has its job finished curation?"
        ) from None


def load_synthetic_dataset(
    store: ObjectStore, dataset_id: str, cache_dir: str | Path | None = None
) -> tuple[list[dict], DatasetMetadata]:
    """Copy the export into `cache_dir/{dataset_id}/` and return its dataset dicts and metadata."""
    manifest = load_manifest(store, dataset_id)
    cache = Path(cache_dir or tempfile.mkdtemp(prefix="dreammask-ds-")) / dataset_id
    pan_key = manifest.files.get("coco_panoptic") or manifest.files.get("panoptic_json") \
        or keys.dataset_file(dataset_id, keys.COCO_PANOPTIC)
    try:
        pan = store.get_json(pan_key)
    except ObjectNotFound:
        raise FileNotFoundError(
            f"dataset {dataset_id!r} has no COCO panoptic annotations at {pan_key}; re-export it"
        ) from None
    json_path = cache / keys.COCO_PANOPTIC
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic like `_fetch`: another process of this machine may be reading the same file right now.
    tmp = json_path.with_name(f"{json_path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(pan))
    tmp.replace(json_path)

    # Categories: the manifest says which are novel; the JSON may carry the same list without the flag.
    novel = {c.id for c in manifest.categories if c.is_novel}
    cats = manifest.categories and [
        {"id": c.id, "name": c.name, "isthing": c.isthing, "is_novel": c.is_novel} for c in manifest.categories
    ] or pan["categories"]
    metadata = DatasetMetadata.from_coco_categories(f"synthetic:{dataset_id}", cats, novel_ids=novel)
    metadata.extra["dataset_id"] = dataset_id

    image_names = {im["id"]: im["file_name"] for im in pan["images"]}
    for ann in pan["annotations"]:
        for folder, name in ((keys.IMAGES_DIR, image_names[ann["image_id"]]), (keys.PANOPTIC_DIR, ann["file_name"])):
            rel = _member(folder, _dataset_relative(dataset_id, name))
            _fetch(store, keys.dataset_file(dataset_id, rel), cache / rel)
    # Names in the JSON without a folder resolve under images/ and panoptic/ of the cache.
    dicts, metadata = load_coco_panoptic_json(
        json_path, cache / keys.IMAGES_DIR, cache / keys.PANOPTIC_DIR, metadata=metadata,
        name=metadata.name, default_synthetic=manifest.is_synthetic,
    )
    for d in dicts:
        for field_name in ("file_name", "pan_seg_file_name"):
            p = Path(d[field_name])
            if not p.exists():
                # "images/s1.png" resolved under images/ twice: take it relative to the cache root.
                folder = keys.IMAGES_DIR if field_name == "file_name" else keys.PANOPTIC_DIR
                alt = cache / _member(folder, p.name)
                d[field_name] = str(alt)
    return dicts, metadata
