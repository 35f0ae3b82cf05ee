"""Registers the platform's curated datasets in the catalog as "synthetic:<dataset_id>".

The store they are read from is set once per process (`use_store`), from the trainer's settings or by
the caller (tests, the demo); dataset ids are then resolved on demand.
"""

from __future__ import annotations

from pathlib import Path

from dreammask.shared.storage import ObjectStore

from .catalog import DatasetCatalog
from .synthetic import load_synthetic_dataset

PREFIX = "synthetic"
_state: dict = {"store": None, "cache_dir": None}


def synthetic_name(dataset_id: str) -> str:
    return f"{PREFIX}:{dataset_id}"


def use_store(store: ObjectStore, cache_dir: str | Path | None = None) -> None:
    """Read "synthetic:<id>" datasets from this store, caching files under cache_dir."""
    _state["store"] = store
    _state["cache_dir"] = cache_dir
    DatasetCatalog.register_prefix(PREFIX, _resolve)


def _resolve(dataset_id: str):
    store = _state["store"]
    if store is None:
        from dreammask.shared.storage import store_from_settings

        store = store_from_settings()
    return load_synthetic_dataset(store, dataset_id, _state["cache_dir"])


DatasetCatalog.register_prefix(PREFIX, _resolve)
