"""Makes a cancel final in the workers: once a job is cancelled (or deleted), nothing more of it lands.

A task checks the cancel flag before it starts, but a batch already running used to go on writing its
outputs for seconds after the cancel (an annotation batch of 8 scenes, a synthesis batch of 16). The
workers' store is wrapped in `CancelGuardStore`: every write of a job's output (under `jobs/{job}/`, its
dataset `datasets/ds-{job}/` and versions `datasets/ds-{job}-vN/`) first checks the job's cancel flag in
Redis and raises `JobCancelled` instead of writing. The skeleton and the task base class take that as
"stop quietly": nothing is recorded, nothing is forwarded, no failure is written.

The job's own record (`status.json`, `progress.json`) stays writable: the cancel itself is recorded there.
The check and the write are two steps, so a write already past the check when the flag is set may still
land (one object per writer thread at most); a deletion sweeps the job's prefixes again afterwards
(shared/deletion.py), which removes those.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from .storage import ObjectStore

_JOB_KEY = re.compile(r"^jobs/(?P<job>[^/]+)/(?P<rest>.+)$")
_DATASET_KEY = re.compile(r"^datasets/ds-(?P<job>[^/]+?)(?:-v\d+)?/")
# The job's record: the cancel transition writes these after the flag is set.
_RECORD = {"status.json", "progress.json"}


class JobCancelled(Exception):
    """A write of a cancelled (or deleted) job's output was refused: stop the work, record nothing."""

    def __init__(self, job_id: str, key: str):
        super().__init__(f"job {job_id} was cancelled; {key} not written")
        self.job_id, self.key = job_id, key


def job_of_output(key: str) -> str | None:
    """The job whose output the key is (None for a job's own record and for anything else)."""
    m = _JOB_KEY.match(key)
    if m:
        return None if m.group("rest") in _RECORD else m.group("job")
    m = _DATASET_KEY.match(key)
    return m.group("job") if m else None


class CancelGuardStore(ObjectStore):
    """Delegates to `inner`; writes of a cancelled job's outputs raise JobCancelled."""

    def __init__(self, inner: ObjectStore, is_cancelled: Callable[[str], bool]):
        self.inner = inner
        self.is_cancelled = is_cancelled

    def _check(self, key: str) -> None:
        job = job_of_output(key)
        if job is not None and self.is_cancelled(job):
            raise JobCancelled(job, key)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._check(key)
        self.inner.put_bytes(key, data, content_type)

    def put_file(self, key: str, path, content_type: str = "application/octet-stream") -> None:
        self._check(key)
        self.inner.put_file(key, path, content_type)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)

    def list_sizes(self, prefix: str = ""):
        return self.inner.list_sizes(prefix)

    def ping(self) -> None:
        self.inner.ping()

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        return self.inner.presigned_url(key, expires_s)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def delete_prefix(self, prefix: str) -> int:
        return self.inner.delete_prefix(prefix)

    def __getattr__(self, name):
        # Backend-specific extras (a local store's local_path, an S3 store's client) pass through.
        return getattr(self.inner, name)
