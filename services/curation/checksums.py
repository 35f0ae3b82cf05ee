"""SHA-256 of every file of a dataset, for its manifest: clients verify downloads and skip files they have."""

from __future__ import annotations

import hashlib

from dreammask.shared import keys
from dreammask.shared.storage import ObjectStore


def dataset_checksums(store: ObjectStore, dataset_id: str) -> dict[str, str]:
    """`{path inside the dataset: "sha256:<hex>"}` for every file but the manifest (written after this)."""
    prefix = keys.dataset_prefix(dataset_id)
    manifest = keys.dataset_manifest(dataset_id)
    return {key[len(prefix):]: "sha256:" + hashlib.sha256(store.get_bytes(key)).hexdigest()
            for key in store.list(prefix) if key != manifest}
