"""Registers datasets in detectron2's DatasetCatalog / MetadataCatalog (needs detectron2): the platform's
curated datasets and the standard evaluation datasets (ADE20K-150/847, Pascal Context, Cityscapes, COCO)."""

from __future__ import annotations

from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog

from dreammask.shared.storage import ObjectStore

from ..data.catalog import DatasetCatalog as OurCatalog
from ..data.register_coco_panoptic import register_builtin_datasets
from .datasets import d2_builtin_entries, d2_dataset_name, synthetic_dataset_for_d2


def register_synthetic_dataset(store: ObjectStore, dataset_id: str, cache_dir: str | Path) -> str:
    """Register `dreammask_synthetic_<id>`; its files are fetched on the first DatasetCatalog.get."""
    name = d2_dataset_name(dataset_id)
    dicts, meta = synthetic_dataset_for_d2(store, dataset_id, cache_dir)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(**meta)
    return name


def register_builtin_in_d2(root=None) -> list[str]:
    """Register every standard dataset as `dreammask_<name>` (dicts read lazily from the platform's catalog);
    returns the names."""
    register_builtin_datasets(root)
    names = []
    for d2_name, ours, meta in d2_builtin_entries(root):
        if d2_name not in DatasetCatalog.list():
            DatasetCatalog.register(d2_name, lambda ours=ours: OurCatalog.get(ours)[0])
            MetadataCatalog.get(d2_name).set(**meta)
        names.append(d2_name)
    return names
