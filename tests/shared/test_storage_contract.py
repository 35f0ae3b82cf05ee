"""One contract, run against both ObjectStore backends: the local directory and S3 (moto_server on loopback)."""

from __future__ import annotations

import uuid
from urllib.parse import urlparse

import httpx
import pytest

from dreammask.shared.storage import LocalObjectStore, ObjectNotFound, StorageError
from dreammask.shared.storage.s3 import S3ObjectStore


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    s3 = request.getfixturevalue("s3_server")
    return S3ObjectStore(s3["endpoint"], s3["access_key"], s3["secret_key"], f"b-{uuid.uuid4().hex[:12]}",
                         public_endpoint="files.example.test:9443", public_secure=True)


def test_put_get_roundtrip(store):
    store.put_bytes("jobs/j1/images/s00000.png", b"\x89PNG data", "image/png")
    assert store.get_bytes("jobs/j1/images/s00000.png") == b"\x89PNG data"
    assert store.exists("jobs/j1/images/s00000.png")
    assert store.size("jobs/j1/images/s00000.png") == 9


def test_put_file_streams_a_local_file(store, tmp_path):
    src = tmp_path / "big.json"
    src.write_bytes(b"[" + b"1," * 300_000 + b"1]")
    store.put_file("datasets/d/annotations/instances.json", src, "application/json")
    assert store.get_bytes("datasets/d/annotations/instances.json") == src.read_bytes()
    store.put_file("datasets/d/annotations/instances.json", src.__class__(__file__))
    assert store.get_bytes("datasets/d/annotations/instances.json") == src.__class__(__file__).read_bytes()


def test_overwrite_replaces_whole_object(store):
    store.put_bytes("a/b", b"first version, longer")
    store.put_bytes("a/b", b"second")
    assert store.get_bytes("a/b") == b"second"


def test_missing_object_raises_not_found(store):
    with pytest.raises(ObjectNotFound):
        store.get_bytes("jobs/nope/spec.json")
    assert not store.exists("jobs/nope/spec.json")
    from dreammask.shared.schemas import StoredJobSpec

    assert store.try_get_model("jobs/nope/spec.json", StoredJobSpec) is None


def test_list_is_recursive_sorted_and_prefix_exact(store):
    for k in ["jobs/j2/layouts/s00001.json", "jobs/j2/layouts/s00000.json", "jobs/j2/spec.json",
              "jobs/j20/spec.json", "datasets/d/x.json"]:
        store.put_bytes(k, b"{}")
    assert list(store.list("jobs/j2/")) == ["jobs/j2/layouts/s00000.json", "jobs/j2/layouts/s00001.json",
                                            "jobs/j2/spec.json"]
    assert list(store.list("jobs/j2/layouts/")) == ["jobs/j2/layouts/s00000.json", "jobs/j2/layouts/s00001.json"]
    assert "jobs/j20/spec.json" in list(store.list("jobs/j2"))
    assert list(store.list("nothing/")) == []


def test_delete_and_delete_missing(store):
    store.put_bytes("x/y", b"1")
    store.delete("x/y")
    assert not store.exists("x/y")
    store.delete("x/y")  # deleting a missing key is not an error


def test_json_helpers(store):
    store.put_json("k.json", {"a": [1, 2], "b": "ü"})
    assert store.get_json("k.json") == {"a": [1, 2], "b": "ü"}


def test_ping(store):
    store.ping()


def test_presigned_url(store):
    store.put_bytes("datasets/d1/card.json", b'{"ok": true}', "application/json")
    url = store.presigned_url("datasets/d1/card.json", 600)
    if isinstance(store, LocalObjectStore):
        assert url is None  # the API streams local objects itself
        return
    # Signed for the endpoint clients reach, not the internal one.
    parsed = urlparse(url)
    assert parsed.netloc == "files.example.test:9443" and parsed.scheme == "https"
    assert "X-Amz-Signature" in url
    # The same signature made for the internal endpoint really downloads the object.
    internal = store.client.presigned_get_object(store.bucket, "datasets/d1/card.json")
    assert httpx.get(internal).content == b'{"ok": true}'


def test_local_store_rejects_escaping_keys(tmp_path):
    s = LocalObjectStore(tmp_path / "o")
    for bad in ["../x", "a/../../x", "/abs", "a//b", ""]:
        with pytest.raises(ValueError):
            s.put_bytes(bad, b"1")


def test_s3_unreachable_is_a_storage_error():
    from dreammask.services.cli.harness import free_port

    with pytest.raises(StorageError):
        S3ObjectStore(f"127.0.0.1:{free_port()}", "k", "s", "bucket", timeout_s=0.5, retries=0)


@pytest.mark.parametrize("key", ["d/" + "a" * 1100, "d/" + "é" * 600, "d/" + "/".join(["b" * 200] * 30)])
def test_keys_too_long_for_the_store_are_not_found_and_refused_on_write(store, key):
    # Past a file name's 255 bytes, a path's 4096 or S3's 1024-byte keys: reading is "not found", never an
    # OSError or an S3 error the API would turn into a 5xx.
    with pytest.raises(ObjectNotFound):
        store.get_bytes(key)
    with pytest.raises(ObjectNotFound):
        store.size(key)
    assert store.exists(key) is False
    store.delete(key)
    assert list(store.list(key)) == []
    with pytest.raises(ValueError, match="too long|longer than"):
        store.put_bytes(key, b"x")
