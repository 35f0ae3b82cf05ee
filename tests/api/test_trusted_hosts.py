"""Trusted hosts: an unknown Host is a 400 before any route runs, so a forged Host never reaches a link the
API hands out; links come from DREAMMASK_PUBLIC_BASE_URL or from a Host the deployment allowed."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.hosts import host_allowed
from dreammask.services.api.main import create_app
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings

ALICE = {"Authorization": "Bearer key-alice"}
SPEC = {"train_categories": ["dog"], "num_novel": 1, "images_per_category": 1, "image_size": 64}


def client(tmp_path, redis_url, **kw) -> TestClient:
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys={"key-alice": "alice"}, **kw)
    return TestClient(create_app(s, build_runtime(s)), base_url="http://localhost:8000")


@pytest.mark.parametrize("path", ["/v1/jobs", "/ui/login", "/docs", "/openapi.json", "/v1/nothing-here"])
def test_an_unknown_host_is_a_400_everywhere(tmp_path, redis_url, redis_client, path):
    with client(tmp_path, redis_url) as c:
        r = c.get(path, headers={**ALICE, "Host": "evil.example"})
        assert r.status_code == 400 and "DREAMMASK_ALLOWED_HOSTS" in r.json()["detail"]
        assert "evil.example" not in r.text


def test_links_use_the_allowed_host_and_never_a_forged_one(tmp_path, redis_url, redis_client):
    with client(tmp_path, redis_url) as c:
        r = c.post("/v1/jobs", json=SPEC, headers=ALICE)
        assert r.status_code == 202 and r.headers["location"].startswith("http://localhost:8000/v1/jobs/")
        r = c.post("/v1/jobs", json=SPEC, headers={**ALICE, "Host": "evil.example"})
        assert r.status_code == 400 and "location" not in r.headers
        assert c.get("/v1/jobs", headers=ALICE).json()["total"] == 1  # the refused one was never created


def test_public_base_url_makes_the_links_and_its_host_allowed(tmp_path, redis_url, redis_client):
    with client(tmp_path, redis_url, public_base_url="https://api.example.org", allowed_hosts=[]) as c:
        r = c.post("/v1/jobs", json=SPEC, headers={**ALICE, "Host": "api.example.org"})
        assert r.status_code == 202 and r.headers["location"].startswith("https://api.example.org/v1/jobs/")
        assert c.get("/v1/jobs", headers=ALICE).status_code == 400  # localhost is no longer in the list


def test_health_and_metrics_answer_any_host(tmp_path, redis_url, redis_client):
    with client(tmp_path, redis_url) as c:
        assert c.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200
        assert c.get("/metrics", headers={"Host": "10.1.2.3:8000"}).status_code == 404  # off, but not a 400


def test_host_patterns():
    allowed = ["localhost", "127.0.0.1", "::1", "*.example.com"]
    assert host_allowed("localhost:8000", allowed) and host_allowed("LOCALHOST.", allowed)
    assert host_allowed("[::1]:8000", allowed) and host_allowed("127.0.0.1", allowed)
    assert host_allowed("api.example.com", allowed) and host_allowed("a.b.example.com:443", allowed)
    assert not host_allowed("example.com", allowed) and not host_allowed("evilexample.com", allowed)
    assert not host_allowed("", allowed) and not host_allowed("localhost.evil.example", allowed)
    assert host_allowed("anything", ["*"])
