"""Dataset dicts and metadata in detectron2's format, without detectron2: what `register.py` puts in
DatasetCatalog / MetadataCatalog, usable (and tested) anywhere."""

from __future__ import annotations

from pathlib import Path

from dreammask.shared import keys
from dreammask.shared.storage import ObjectStore

from ..data.builtin import BUILTIN, datasets_root
from ..data.coco_panoptic import IGNORE_LABEL, DatasetMetadata
from ..data.synthetic import load_synthetic_dataset
from ..data.vocabulary import load_vocabulary_file

# detectron2's own builtin catalog already holds some of the standard names (coco_2017_*_panoptic,
# ade20k_sem_seg_val, ...) with its class lists; this platform's go under their own prefix.
D2_BUILTIN_PREFIX = "dreammask_"


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


def builtin_metadata(name: str) -> DatasetMetadata:
    """A standard dataset's classes from its vocabulary file, without reading the dataset (detectron2's
    MetadataCatalog is filled at registration). The prepared files number classes the same way: COCO's
    JSON by its category ids, the others by the vocabulary file's ids."""
    ds = BUILTIN[name]
    vf = load_vocabulary_file(ds.vocabulary)
    return DatasetMetadata(name=name, classes=[s[0] for s in vf.synonyms], dataset_ids=list(vf.dataset_ids),
                           isthing=[bool(t) for t in vf.isthing], synonyms=[list(s) for s in vf.synonyms],
                           curated=True, ignore_label=ds.ignore_label, test_size=ds.test_size)


def d2_builtin_entries(root=None) -> list[tuple[str, str, dict]]:
    """(detectron2 name, this catalog's name, MetadataCatalog fields) of every standard dataset: ADE20K-150
    and -847, Pascal Context, Cityscapes and COCO, as `register.py` puts them in detectron2's catalogs."""
    base = datasets_root(root)
    out = []
    for name, ds in BUILTIN.items():
        meta = d2_metadata(builtin_metadata(name))
        meta.update(ignore_label=ds.ignore_label, image_root=str(base / ds.image_root),
                    evaluator_type="coco_panoptic_seg" if ds.panoptic else "sem_seg")
        if ds.panoptic:
            meta.update(panoptic_json=str(base / ds.panoptic_json), panoptic_root=str(base / ds.panoptic_root))
        if ds.sem_seg_root:
            meta["sem_seg_root"] = str(base / ds.sem_seg_root)
        out.append((D2_BUILTIN_PREFIX + name, name, meta))
    return out
