"""File routes answer HEAD, send an ETag and serve byte ranges, on a local store (file responses) and on an
S3 store read through the API (no presigning)."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.shared.runtime import build_runtime
from dreammask.shared.schemas import DatasetManifest, utcnow
from dreammask.shared.settings import Settings

KEYS = {"key-alice": "alice"}
ALICE = {"Authorization": "Bearer key-alice"}
DATA = bytes(range(256)) * 40  # 10 240 bytes


@pytest.fixture(params=["local", "s3"])
def client(request, tmp_path, redis_url, redis_client):
    if request.param == "local":
        s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys=KEYS)
    else:
        s3 = request.getfixturevalue("s3_server")
        s = Settings(redis_url=redis_url, api_keys=KEYS, storage_backend="s3", s3_endpoint=s3["endpoint"],
                     s3_access_key=s3["access_key"], s3_secret_key=s3["secret_key"],
                     s3_bucket=f"b-{uuid.uuid4().hex[:12]}")
    rt = build_runtime(s)
    rt.store.put_bytes("datasets/ds-x/images/a.bin", DATA)
    rt.store.put_json("datasets/ds-x/manifest.json", DatasetManifest(
        dataset_id="ds-x", job_id="j-x", tenant="alice", created_at=utcnow(), categories=[], images=0,
        instances=0, files={}))
    with TestClient(create_app(s, rt), base_url="http://localhost") as c:
        yield c


URL = "/v1/datasets/ds-x/files/images/a.bin"


def test_head_has_size_and_etag_and_no_body(client):
    r = client.head(URL, headers=ALICE)
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) == len(DATA) and r.headers["etag"]
    assert client.get(URL, headers=ALICE).headers["etag"] == r.headers["etag"]
    assert client.head(URL).status_code == 401
    assert client.head("/v1/datasets/ds-x/files/images/missing.bin", headers=ALICE).status_code == 404


def test_ranges_resume_and_if_range(client):
    etag = client.head(URL, headers=ALICE).headers["etag"]
    r = client.get(URL, headers={**ALICE, "Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == DATA[1000:]
    assert r.headers["content-range"] == f"bytes 1000-{len(DATA) - 1}/{len(DATA)}"
    r = client.get(URL, headers={**ALICE, "Range": "bytes=10-19", "If-Range": etag})
    assert r.status_code == 206 and r.content == DATA[10:20]
    # The file changed since the client's partial copy: it gets the whole file again.
    r = client.get(URL, headers={**ALICE, "Range": "bytes=10-19", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == DATA
    r = client.get(URL, headers={**ALICE, "Range": f"bytes={len(DATA) + 5}-"})
    assert r.status_code == 416


def test_dataset_listing_gives_sizes_where_free(client):
    files = client.get("/v1/datasets/ds-x", params={"presign": False}, headers=ALICE).json()["files"]
    f = next(x for x in files if x["path"] == "images/a.bin")
    assert f["url"].endswith(URL) and not f["presigned"]
    if client.app.state.runtime.store.__class__.__name__ == "LocalObjectStore":
        assert f["size"] == len(DATA)


# A name past what a file system takes in one path component (255 bytes: ENAMETOOLONG) and a key past what S3
# takes (1024 bytes), on every route that takes a path-like part.
LONG_NAMES = ["a" * 300, "b" * 2000, "é" * 200, "/".join(["c" * 250] * 20)]
LONG_ROUTES = [
    ("/v1/datasets/ds-x/files/images/{}", True),
    ("/v1/datasets/ds-x/files/{}", True),
    ("/v1/datasets/{}", True),
    ("/v1/datasets/{}/files/a.bin", True),
    ("/v1/datasets/{}/versions", True),
    ("/v1/jobs/j-x/files/images/{}", True),
    ("/v1/jobs/{}/files/images/a.png", True),
    ("/v1/jobs/{}", True),
    ("/ui/static/{}", False),
    ("/ui/jobs/j-x/thumbs/{}.jpg", False),
    ("/ui/jobs/j-x/thumbs/{}", False),
    ("/ui/jobs/j-x/samples/{}/image.png", False),
    ("/ui/jobs/j-x/samples/{}", False),
    ("/ui/datasets/ds-x/files/{}", False),
    ("/ui/datasets/ds-x/files/images/{}", False),
    ("/ui/{}", False),
    ("/static/docs/{}", False),
    ("/{}", False),
]


@pytest.mark.parametrize("name", LONG_NAMES, ids=["300", "2000", "utf8-400-bytes", "deep-5000"])
def test_over_long_names_in_paths_are_a_404_never_a_5xx(client, name):
    from dreammask.services.api.ui import session as ses

    app = client.app
    rt = app.state.runtime
    sess = ses.create(rt, app.state.settings, "key-alice")
    client.cookies.set(ses.SESSION_COOKIE, sess.sid)
    # A real job of the tenant, so its routes reach the store with the long name.
    r = client.post("/v1/jobs", json={"train_categories": ["dog"], "num_novel": 1, "images_per_category": 1},
                    headers=ALICE)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    try:
        for template, v1 in LONG_ROUTES:
            url = template.replace("j-x", job_id).format(name)
            r = client.get(url, headers=ALICE if v1 else {}, follow_redirects=False)
            assert r.status_code == 404, (url[:80], r.status_code, r.text[:200])
            r = client.head(url, headers=ALICE if v1 else {}, follow_redirects=False)
            assert r.status_code in (404, 405), (url[:80], r.status_code)  # 405: a route without HEAD
    finally:
        client.cookies.clear()
