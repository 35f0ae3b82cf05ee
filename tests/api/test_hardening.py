"""The API under bad input and failing stores: never a 5xx for input, 503 naming the store that is down."""

from __future__ import annotations

import asyncio
import json
import socket
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.hardening import GateMiddleware
from dreammask.services.api.main import create_app
from dreammask.services.cli.harness import free_port
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings
from dreammask.shared.storage.s3 import S3ObjectStore

KEYS = {"key-alice": "alice"}

SPEC = {"train_categories": ["dog"], "num_novel": 1, "images_per_category": 1}


def _run_gate(settings, headers: dict, chunks: list[bytes]):
    """Drive the gate as the server would; return (status, how many body chunks it read, app called)."""
    reads, sent, called = [0], [], [False]

    async def app(scope, receive, send):
        called[0] = True
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        i = reads[0]
        reads[0] += 1
        return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}

    async def send(message):
        sent.append(message)

    runtime = SimpleNamespace(runtime=build_runtime(settings))
    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "client": ("127.0.0.1", 50000),
             "app": SimpleNamespace(state=runtime),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(GateMiddleware(app, settings)(scope, receive, send))
    return sent[0]["status"], reads[0], called[0]


def test_authentication_and_size_limit_come_before_the_body_is_read(api_settings, redis_client):
    big = [b"x" * 1024] * 4096  # 4 MiB
    assert _run_gate(api_settings, {}, big) == (401, 0, False)
    assert _run_gate(api_settings, {"Authorization": "Bearer nope"}, big) == (401, 0, False)
    declared = {"Authorization": "Bearer key-alice", "Content-Length": str(4 << 20)}
    assert _run_gate(api_settings, declared, big) == (413, 0, False)
    # Without a Content-Length, reading stops as soon as the limit is passed.
    status, reads, called = _run_gate(api_settings, {"Authorization": "Bearer key-alice"}, big)
    assert (status, called) == (413, False) and reads == api_settings.max_request_bytes // 1024 + 1
    assert _run_gate(api_settings, {"Authorization": "Bearer key-alice"}, [b"{}"]) == (204, 1, True)


def test_oversized_body_is_413_over_http(api, alice):
    r = api.post("/v1/jobs", content=b"{" + b" " * (2 << 20) + b"}", headers={**alice, "Content-Type": "application/json"})
    assert r.status_code == 413 and "DREAMMASK_MAX_REQUEST_BYTES" in r.json()["detail"]


@pytest.mark.parametrize("raw", [
    '{"train_categories": ["\\ud800"], "num_novel": 1}',
    '{"name": "a\\udfff", "train_categories": ["dog"]}',
    '{"\\ud800": 1, "train_categories": ["dog"]}',
    '{"train_categories": ["dog"], "backends": {"synthesis": "\\ud800"}}',
])
def test_lone_surrogates_are_a_422_not_a_500(api, alice, raw):
    r = api.post("/v1/jobs", content=raw.encode(), headers={**alice, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "surrogate" in r.json()["detail"][0]["msg"]


# Every way a client may label a JSON body that FastAPI still parses as JSON (no type or an empty one, any
# case, parameters, `+json` suffixes), and a request naming two types: the gate must see what FastAPI sees.
JSON_TYPES = [
    [("Content-Type", "application/json; charset=utf-8")],
    [("Content-Type", "Application/JSON")],
    [("Content-Type", "APPLICATION/JSON;CHARSET=UTF-8")],
    [("Content-Type", "application/vnd.api+json")],
    [("Content-Type", "application/merge-patch+json; charset=utf-8")],
    [("Content-Type", "")],
    [],
    [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
]


@pytest.mark.parametrize("content_type", JSON_TYPES, ids=lambda h: "+".join(v for _k, v in h) or "none")
@pytest.mark.parametrize("raw, field", [
    ('{"train_categories": ["dog"], "num_novel": NaN}', "num_novel"),
    ('{"train_categories": ["dog"], "thresholds": {"min_score": Infinity}}', "min_score"),
    ('{"train_categories": ["dog"], "seed": -Infinity}', "seed"),
])
def test_non_finite_numbers_are_a_422_naming_the_field_under_any_json_type(api, alice, content_type, raw, field):
    r = api.post("/v1/jobs", content=raw.encode(), headers=[*alice.items(), *content_type])
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["type"] == "finite_number" and detail["loc"][-1] == field, detail
    assert "send a finite number" in detail["msg"]


def test_422_quotes_only_an_excerpt(api, alice):
    huge = "a" * 500_000
    r = api.post("/v1/jobs", json={**SPEC, "unknown_field": huge}, headers=alice)
    assert r.status_code == 422
    assert len(r.content) < 2000 and "unknown_field" in r.text and "500000 characters" in r.text


def test_category_names_are_nfkc_normalised_and_confusables_refused(api, alice):
    r = api.post("/v1/jobs", json={**SPEC, "train_categories": ["dog", "ｄｏｇ"]}, headers=alice)
    assert r.status_code == 422 and "duplicates item 0" in r.text
    r = api.post("/v1/jobs", json={**SPEC, "train_categories": ["cat", "d\u043eg"]}, headers=alice)
    assert r.status_code == 422 and "Cyrillic and Latin" in r.text
    r = api.post("/v1/jobs", json={**SPEC, "train_categories": ["cafe\u0301"]}, headers=alice)
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    assert api.rt.tracker.spec(job_id).train_categories == ["caf\u00e9"]


def test_job_routes_are_503_with_a_reason_when_redis_is_down(api_settings, api, alice):
    job_id = api.post("/v1/jobs", json=SPEC, headers=alice).json()["job_id"]
    dead = api_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(dead, build_runtime(dead)), base_url="http://localhost") as c:
        for method, path in [("get", f"/v1/jobs/{job_id}"), ("post", f"/v1/jobs/{job_id}/cancel"),
                             ("post", f"/v1/jobs/{job_id}/resume")]:
            r = getattr(c, method)(path, headers=alice)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json()["unavailable"] == "broker" and "retry later" in r.json()["detail"]
            assert r.headers["Retry-After"]
        # Listing reads storage only: it keeps working.
        assert c.get("/v1/jobs", headers=alice).json()["total"] == 1


def test_job_routes_are_503_with_a_reason_when_storage_is_down(api_settings, alice):
    store = S3ObjectStore(f"127.0.0.1:{free_port()}", "k", "s", "dreammask", create_bucket=False, timeout_s=0.3, retries=0)
    with TestClient(create_app(api_settings, build_runtime(api_settings, store=store)), base_url="http://localhost") as c:
        for method, path, body in [("get", "/v1/jobs/j20260101000000deadbeef", None), ("get", "/v1/jobs", None),
                                   ("post", "/v1/jobs", SPEC), ("get", "/v1/datasets/j20260101000000deadbeef", None)]:
            kw = {"json": body} if body else {}
            r = getattr(c, method)(path, headers=alice, **kw)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json()["unavailable"] == "storage"


def test_readyz_reports_a_stalled_store_within_its_deadline(redis_url):
    # A server that accepts connections and never answers: the S3 client alone would wait for minutes.
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(16)
    try:
        s = Settings(redis_url=redis_url, api_keys=KEYS)
        store = S3ObjectStore(f"127.0.0.1:{stalled.getsockname()[1]}", "k", "s", "dreammask", create_bucket=False,
                              timeout_s=30, retries=2)
        with TestClient(create_app(s, build_runtime(s, store=store)), base_url="http://localhost") as c:
            r = c.get("/readyz")
            again = c.get("/readyz")
    finally:
        stalled.close()
    assert r.status_code == 503 and again.status_code == 503
    assert r.json()["checks"]["broker"] == "ok"
    assert "no answer within" in r.json()["checks"]["storage"]
    assert json.loads(again.text)["checks"]["storage"].startswith("unreachable")


def test_request_headers_past_the_limit_are_a_431_naming_the_setting(api_settings, redis_client):
    s = api_settings.model_copy(update={"max_header_bytes": 2048})
    with TestClient(create_app(s, build_runtime(s)), base_url="http://api.test") as c:
        assert c.get("/healthz", headers={"X-Pad": "a" * 1500}).status_code == 200
        # Many small headers count together, as one large one does; before authentication and the host check.
        r = c.get("/v1/jobs", headers=[("X-Pad", "a" * 100)] * 30 + [("Host", "evil.example")])
        assert r.status_code == 431, r.text
        assert "DREAMMASK_MAX_HEADER_BYTES" in r.json()["detail"] and "2048 bytes" in r.json()["detail"]
        assert c.get("/healthz", headers={"Cookie": "x=" + "a" * 3000}).status_code == 431
