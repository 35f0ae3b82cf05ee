"""A local-directory object store: the embedded default, and what `make demo` uses."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .base import ObjectNotFound, ObjectStore, StorageError

# Linux's limits (bytes): one path component, and a whole path. A key past them cannot name a file here, so
# reading it is "not found" (not an OSError, which the API would answer with a 5xx); writing it is refused.
NAME_MAX = 255
PATH_MAX = 4096


def _too_long(e: OSError) -> bool:
    # A file system with lower limits (eCryptfs: 143 bytes a name) says so only when asked.
    return e.errno == errno.ENAMETOOLONG


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"invalid object key: {key!r}")
        return self.root / key

    @staticmethod
    def _fits(path: Path) -> bool:
        raw = os.fsencode(path)
        return len(raw) < PATH_MAX and all(len(part) <= NAME_MAX for part in raw.split(b"/"))

    def _read_path(self, key: str) -> Path:
        """The path of a key to read: ObjectNotFound for a key no file can have (too long)."""
        path = self._path(key)
        if not self._fits(path):
            raise ObjectNotFound(key)
        return path

    def _write_path(self, key: str) -> Path:
        path = self._path(key)
        if not self._fits(path):
            raise ValueError(f"invalid object key: too long for the file system ({len(key.encode())} bytes, at most "
                             f"{NAME_MAX} bytes between slashes): {key[:80]!r}…")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._write_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: readers never see half an object, as with S3.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path, content_type: str = "application/octet-stream") -> None:
        target = self._write_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)  # chunked copy: constant memory
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._read_path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as e:
            if _too_long(e):
                raise ObjectNotFound(key) from None
            raise

    def exists(self, key: str) -> bool:
        try:
            return self._read_path(key).is_file()
        except ObjectNotFound:
            return False
        except OSError as e:
            if _too_long(e):
                return False
            raise

    def delete(self, key: str) -> None:
        try:
            self._read_path(key).unlink(missing_ok=True)
        except ObjectNotFound:
            pass  # no file can have that name: nothing to delete

    def list(self, prefix: str = "") -> Iterator[str]:
        # Walk only the directory the prefix names (its part up to the last '/'), not the whole store.
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    keys.append(rel)
        return iter(sorted(keys))

    def list_sizes(self, prefix: str = ""):
        for k in self.list(prefix):
            try:
                yield k, (self.root / k).stat().st_size
            except FileNotFoundError:
                continue

    def delete_prefix(self, prefix: str) -> int:
        n = super().delete_prefix(prefix)
        # Leave no empty folders behind (a deleted job's tree), deepest first; a folder a writer is
        # filling again is not empty and stays.
        if prefix.endswith("/"):
            top = self._path(prefix.rstrip("/"))
            if top.is_dir():
                for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass
        return n

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise StorageError(f"storage directory {self.root} is missing or not writable")

    def size(self, key: str) -> int:
        try:
            return self._read_path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as e:
            if _too_long(e):
                raise ObjectNotFound(key) from None
            raise

    def local_path(self, key: str) -> Path:
        """Where the object lives on disk (the API streams these with a file response)."""
        if not self.exists(key):
            raise ObjectNotFound(key)
        return self._path(key)
