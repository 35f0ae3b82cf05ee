"""The `ObjectStore` interface every service uses for payloads (MinIO/S3 in deployment, a directory locally)."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


class StorageError(Exception):
    """Storage failed in a way worth retrying (unreachable, timed out)."""


class ObjectNotFound(KeyError):
    """No object at that key."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object at {self.key!r}"


class ObjectStore(ABC):
    """Flat keys ("jobs/j1/spec.json"), bytes in, bytes out. Writes are whole-object and atomic."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing key is not an error."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """All keys under the prefix, recursively, in lexicographic order."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StorageError when the store cannot be reached."""

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        """A URL a client can GET directly, or None where the store cannot sign (the API streams then)."""
        return None

    def size(self, key: str) -> int:
        return len(self.get_bytes(key))

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, size in bytes) of every object under the prefix; backends list sizes without reading."""
        for k in self.list(prefix):
            try:
                yield k, self.size(k)
            except ObjectNotFound:  # deleted since it was listed
                continue

    def put_file(self, key: str, path: str | os.PathLike, content_type: str = "application/octet-stream") -> None:
        """Store a local file's content. Backends override this to stream it (no whole copy in memory)."""
        self.put_bytes(key, Path(path).read_bytes(), content_type)

    # -- conveniences shared by every backend
    def put_json(self, key: str, obj: Any) -> None:
        if isinstance(obj, BaseModel):
            data = obj.model_dump_json(indent=None).encode()
        else:
            data = json.dumps(obj, separators=(",", ":"), default=str).encode()
        self.put_bytes(key, data, "application/json")

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def get_model(self, key: str, model: type[M]) -> M:
        return model.model_validate_json(self.get_bytes(key))

    def try_get_model(self, key: str, model: type[M]) -> M | None:
        try:
            return self.get_model(key, model)
        except ObjectNotFound:
            return None

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        for k in keys:
            self.delete(k)
        return len(keys)
