"""Object storage: `ObjectStore` with a local-directory and an S3 (minio client) backend."""

from __future__ import annotations

from .base import ObjectNotFound, ObjectStore, StorageError
from .local import LocalObjectStore


def store_from_settings(settings=None) -> ObjectStore:
    from ..settings import get_settings

    s = settings or get_settings()
    if s.storage_backend == "local":
        return LocalObjectStore(s.storage_root)
    from .s3 import S3ObjectStore

    return S3ObjectStore(
        s.s3_endpoint, s.s3_access_key, s.s3_secret_key.get_secret_value(), s.s3_bucket,
        secure=s.s3_secure, region=s.s3_region, public_endpoint=s.s3_public_endpoint,
        public_secure=s.s3_public_secure,
    )


__all__ = ["ObjectStore", "ObjectNotFound", "StorageError", "LocalObjectStore", "store_from_settings"]
