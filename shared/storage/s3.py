"""S3-protocol object store on the `minio` client (MinIO in deployment; any S3 server works)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta

import urllib3
from minio import Minio
from minio.error import S3Error

from .base import ObjectNotFound, ObjectStore, StorageError

# Read errors that mean "no such object": a key S3 could never have stored (too long) among them.
_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound", "KeyTooLongError"}
# S3's (and MinIO's) limit on a key, in UTF-8 bytes: longer keys are not found without asking the server.
MAX_KEY_BYTES = 1024


def _fits(key: str) -> bool:
    return len(key.encode("utf-8", "surrogatepass")) <= MAX_KEY_BYTES


def _http(timeout_s: float, retries: int) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s * 4),
        retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        maxsize=16,
    )


class S3ObjectStore(ObjectStore):
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        public_endpoint: str | None = None,
        public_secure: bool | None = None,
        create_bucket: bool = True,
        timeout_s: float = 5.0,
        retries: int = 2,
    ):
        self.bucket = bucket
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region,
            http_client=_http(timeout_s, retries),
        )
        # Presigned URLs embed the host they were signed for: sign with the endpoint clients reach.
        # The region is given, so signing needs no request to that (maybe unreachable) host.
        self.signer = Minio(
            public_endpoint or endpoint, access_key=access_key, secret_key=secret_key,
            secure=secure if public_secure is None else public_secure, region=region,
        )
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as e:
            if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageError(f"cannot create bucket {self.bucket}: {e}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageError(f"object storage unreachable: {e}") from e

    def _call(self, fn, *args, key: str | None = None, **kwargs):
        try:
            return fn(*args, **kwargs)
        except S3Error as e:
            if e.code in _MISSING and key is not None:
                raise ObjectNotFound(key) from None
            raise StorageError(f"S3 error {e.code}: {e.message}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageError(f"object storage unreachable: {e}") from e

    def _writable(self, key: str) -> None:
        if not _fits(key):
            raise ValueError(f"invalid object key: longer than S3's {MAX_KEY_BYTES} bytes: {key[:80]!r}…")

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._writable(key)
        self._call(self.client.put_object, self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def put_file(self, key: str, path, content_type: str = "application/octet-stream") -> None:
        # fput_object uploads in parts: a large export never sits whole in memory.
        self._writable(key)
        self._call(self.client.fput_object, self.bucket, key, str(path), content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        if not _fits(key):
            raise ObjectNotFound(key)
        resp = self._call(self.client.get_object, self.bucket, key, key=key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def exists(self, key: str) -> bool:
        if not _fits(key):
            return False
        try:
            self._call(self.client.stat_object, self.bucket, key, key=key)
            return True
        except ObjectNotFound:
            return False

    def size(self, key: str) -> int:
        if not _fits(key):
            raise ObjectNotFound(key)
        return self._call(self.client.stat_object, self.bucket, key, key=key).size

    def delete(self, key: str) -> None:
        if not _fits(key):
            return  # S3 never stored it
        self._call(self.client.remove_object, self.bucket, key)

    def list(self, prefix: str = "") -> Iterator[str]:
        objects = self._call(self.client.list_objects, self.bucket, prefix=prefix, recursive=True)
        try:
            keys = [o.object_name for o in objects]
        except S3Error as e:
            raise StorageError(f"S3 error {e.code}: {e.message}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageError(f"object storage unreachable: {e}") from e
        return iter(sorted(keys))

    def list_sizes(self, prefix: str = ""):
        objects = self._call(self.client.list_objects, self.bucket, prefix=prefix, recursive=True)
        try:
            found = [(o.object_name, o.size or 0) for o in objects]
        except S3Error as e:
            raise StorageError(f"S3 error {e.code}: {e.message}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise StorageError(f"object storage unreachable: {e}") from e
        return iter(sorted(found))

    def ping(self) -> None:
        try:
            ok = self._call(self.client.bucket_exists, self.bucket)
        except StorageError:
            raise
        if not ok:
            raise StorageError(f"bucket {self.bucket} does not exist")

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        return self.signer.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_s))
