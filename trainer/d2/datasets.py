"""Dataset dicts and metadata in detectron2's format, without detectron2: what `register.py` puts in
DatasetCatalog / MetadataCatalog, usable (and tested) anywhere."""

from __future__ import annotations

from pathlib import Path

from dreammask.shared import keys
from dreammask.shared.storage import ObjectStore

from ..data.coco_panoptic import IGNORE_LABEL, DatasetMetadata
from ..data.synthetic import load_synthetic_dataset


def d2_metadata(meta: DatasetMetadata, cache_root: str | Path | None = None) -> dict:
    """MetadataCatalog fields as Mask2Former/FC-CLIP's COCO panoptic registration sets them: every class
    (things and stuff) in `stuff_classes` with one contiguous range, things also in `thing_classes`."""
    thing_ids = [d for d, t in zip(meta.dataset_ids, meta.isthing) if t]
    contiguous = meta.dataset_id_to_contiguous_id
    out = {
        "thing_classes": [c for c, t in zip(meta.classes, meta.isthing) if t],
        "stuff_classes": list(meta.classes),
        "thing_dataset_id_to_contiguous_id": {d: contiguous[d] for d in thing_ids},
        "stuff_dataset_id_to_contiguous_id": dict(contiguous),
        "novel_classes": [c for c, n in zip(meta.classes, meta.is_novel) if n],
        "ignore_label": IGNORE_LABEL,
        "label_divisor": 1000,
        "evaluator_type": "coco_panoptic_seg",
    }
    if cache_root is not None:
        root = Path(cache_root)
        out.update(panoptic_json=str(root / keys.COCO_PANOPTIC), panoptic_root=str(root / keys.PANOPTIC_DIR),
                   image_root=str(root / keys.IMAGES_DIR))
    return out


def synthetic_dataset_for_d2(store: ObjectStore, dataset_id: str, cache_dir: str | Path) -> tuple[list[dict], dict]:
    """(dataset dicts, metadata dict) of a curated dataset, files copied under cache_dir/dataset_id."""
    dicts, meta = load_synthetic_dataset(store, dataset_id, cache_dir)
    return dicts, d2_metadata(meta, Path(cache_dir) / dataset_id)


def d2_dataset_name(dataset_id: str) -> str:
    return f"dreammask_synthetic_{dataset_id}"
