"""What a render ran with, beyond its parameters: enough to tell, later, whether rendering it again on this
machine can give the same pixels.

* `package_versions()`: the installed versions of the packages whose code decides the pixels (torch,
  diffusers, transformers, open_clip, segment-anything) and of dreammask itself; read once per process.
* `file_sha256(path)`: the SHA-256 of a weight file, cached per worker process by (path, size, mtime), so a
  worker hashes its multi-gigabyte weights once, not once per batch.
* `environment(backend)`: both, for the files the backend says it read (`Backend.weight_files()`); what the
  synthesis stage records in `RenderRecord.environment`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

# Distribution names (as pip knows them) of the packages a render's pixels depend on.
PINNED_PACKAGES = ("torch", "diffusers", "transformers", "open_clip_torch", "segment_anything", "dreammask")

_hashes: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed version of each pinned package (None where it is not installed)."""
    out: dict[str, str | None] = {}
    for name in PINNED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def file_sha256(path: str | os.PathLike, chunk: int = 8 << 20) -> str:
    """"sha256:<hex>" of a file, computed once per process for a given (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _lock:
        cached = _hashes.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = f"sha256:{h.hexdigest()}"
    with _lock:
        _hashes[key] = digest
    return digest


def weight_hashes(files: list[str | os.PathLike], root: str | os.PathLike | None = None) -> dict[str, str]:
    """{file (relative to `root` when under it): "sha256:<hex>"} for every existing file, in name order."""
    out: dict[str, str] = {}
    base = Path(root).resolve() if root else None
    for f in sorted(Path(x).resolve() for x in files):
        if not f.is_file():
            continue
        name = str(f.relative_to(base)) if base is not None and f.is_relative_to(base) else str(f)
        out[name] = file_sha256(f)
    return out


def environment(backend: Any) -> dict[str, Any]:
    """Package versions and the hashes of the weight files `backend` read (its `weight_files()`)."""
    files, root = [], None
    weight_files = getattr(backend, "weight_files", None)
    if callable(weight_files):
        files, root = weight_files()
    return {"packages": package_versions(), "weights": weight_hashes(files, root)}
