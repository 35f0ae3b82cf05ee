"""Registers curated datasets in detectron2's DatasetCatalog / MetadataCatalog (needs detectron2)."""

from __future__ import annotations

from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog

from dreammask.shared.storage import ObjectStore

from .datasets import d2_dataset_name, synthetic_dataset_for_d2


def register_synthetic_dataset(store: ObjectStore, dataset_id: str, cache_dir: str | Path) -> str:
    """Register `dreammask_synthetic_<id>`; its files are fetched on the first DatasetCatalog.get."""
    name = d2_dataset_name(dataset_id)
    dicts, meta = synthetic_dataset_for_d2(store, dataset_id, cache_dir)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(**meta)
    return name
