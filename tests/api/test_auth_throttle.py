"""Authentication throttling: wrong keys are counted per client address and per key prefix; past the limit
every attempt is a 429 with Retry-After (the right key too: while locked nothing is compared), the lock
doubles with each further failure, each failure writes one audit line without the key, and the login
form's CSRF token is good for one attempt."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api import throttle
from dreammask.services.api.main import create_app
from dreammask.services.cli.harness import free_port
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings

KEYS = {"key-alice-0123456789": "alice"}
RIGHT = {"Authorization": "Bearer key-alice-0123456789"}
SPEC = {"train_categories": ["dog"], "num_novel": 1, "images_per_category": 1, "image_size": 64}


@pytest.fixture()
def settings(tmp_path, redis_url):
    return Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys=KEYS, auth_max_failures=5,
                    auth_failure_window_s=600, auth_backoff_s=30, auth_backoff_max_s=3600,
                    metrics_token="metrics-secret", public_base_url="http://api.test")


def client(settings, addr: str) -> TestClient:
    return TestClient(create_app(settings, build_runtime(settings)), base_url="http://api.test",
                      client=(addr, 40000))


def test_wrong_bearer_keys_lock_the_address_then_even_the_right_key_waits(settings, redis_client, caplog):
    caplog.set_level(logging.INFO, logger="dreammask.audit")
    with client(settings, "10.0.0.1") as c, client(settings, "10.0.0.2") as other:
        codes = [c.get("/v1/jobs", headers={"Authorization": f"Bearer guess-{i:04d}"}).status_code
                 for i in range(8)]
        assert codes[:4] == [401] * 4 and codes[4:] == [429] * 4, codes
        r = c.get("/v1/jobs", headers=RIGHT)
        assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 3600
        assert "too many failed authentication attempts" in r.json()["detail"]
        # A body-carrying request is refused before its body is read, the same way.
        assert c.post("/v1/jobs", json=SPEC, headers=RIGHT).status_code == 429
        # Another address is not locked.
        assert other.get("/v1/jobs", headers=RIGHT).status_code == 200
        assert other.post("/v1/jobs", json=SPEC, headers=RIGHT).status_code == 202
        # No key at all guesses nothing: a plain 401, not counted.
        assert other.get("/v1/jobs").status_code == 401
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "dreammask.audit"]
    # One line per wrong key compared; attempts refused while locked compare nothing (they are counted in
    # the dreammask_auth_throttled_total metric instead).
    assert len(lines) == 5
    assert all(line.startswith("auth_failure where=bearer addr=10.0.0.1") for line in lines)
    assert not any("guess-" in line for line in lines)  # never the key


def test_the_lock_doubles_with_each_further_failure(settings, redis_client):
    with client(settings, "10.0.0.3") as c:
        for i in range(5):
            c.get("/v1/jobs", headers={"Authorization": f"Bearer nope-{i:04d}"})
        first = throttle.locked_for(redis_client, "10.0.0.3")
        assert 25 <= first <= 30
        # Past the lock (as if its TTL ran out) a further failure locks twice as long.
        redis_client.delete(*redis_client.keys("dreammask:auth:lock:*"))
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer nope-9999"}).status_code == 429
        assert 55 <= throttle.locked_for(redis_client, "10.0.0.3") <= 60


def test_one_key_prefix_guessed_from_many_addresses_is_locked_but_not_for_its_holder(settings, redis_client):
    codes = []
    for i in range(5):  # a guesser spread over five addresses, one guess each, same 8-character prefix
        with client(settings, f"10.1.0.{i}") as c:
            codes.append(c.get("/v1/jobs", headers={"Authorization": f"Bearer key-alicX-{i}"}).status_code)
    assert codes == [401] * 4 + [429]
    with client(settings, "10.2.0.1") as c:
        # A fresh address, a wrong key of that prefix: 429, with the prefix's back-off.
        r = c.get("/v1/jobs", headers={"Authorization": "Bearer key-alicY-9"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        # The holder of the right key (same prefix) is not locked out by the guesser.
        assert c.get("/v1/jobs", headers=RIGHT).status_code == 200
        # Another prefix is not locked either.
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer other-prefix"}).status_code == 401


def test_the_metrics_token_is_throttled_too(settings, redis_client):
    with client(settings, "10.0.0.4") as c:
        codes = [c.get("/metrics", headers={"Authorization": f"Bearer m-{i}"}).status_code for i in range(6)]
        assert codes == [401] * 4 + [429] * 2
        assert c.get("/metrics", headers={"Authorization": "Bearer metrics-secret"}).status_code == 429
    with client(settings, "10.0.0.5") as c:
        assert c.get("/metrics", headers={"Authorization": "Bearer metrics-secret"}).status_code == 200


def test_without_redis_authentication_still_works_unthrottled(settings):
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with client(dead, "10.0.0.6") as c:
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/jobs", headers=RIGHT).status_code == 200  # listing reads storage only


def _form(c):
    page = c.get("/ui/login")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def test_login_tokens_are_single_use_and_failed_logins_are_throttled(settings, redis_client, caplog):
    caplog.set_level(logging.INFO, logger="dreammask.audit")
    with client(settings, "10.0.0.7") as c:
        token = _form(c)
        r = c.post("/ui/login", data={"api_key": "wrong-key-1", "csrf_token": token}, follow_redirects=False)
        assert r.status_code == 303 and "error=" in r.headers["location"]
        # The same form again: refused, whatever the key.
        r = c.post("/ui/login", data={"api_key": "key-alice-0123456789", "csrf_token": token},
                   follow_redirects=False)
        assert r.status_code == 403 and "dm_session" not in c.cookies
        codes = []
        for i in range(6):
            codes.append(c.post("/ui/login", data={"api_key": f"wrong-key-{i + 2}", "csrf_token": _form(c)},
                                follow_redirects=False).status_code)
        assert codes == [303] * 3 + [429] * 3, codes
        r = c.post("/ui/login", data={"api_key": "key-alice-0123456789", "csrf_token": _form(c)},
                   follow_redirects=False)
        assert r.status_code == 429 and "dm_session" not in c.cookies and int(r.headers["Retry-After"]) > 0
        assert "too many failed attempts" in r.text and 'name="csrf_token"' in r.text
    with client(settings, "10.0.0.8") as c:
        r = c.post("/ui/login", data={"api_key": "key-alice-0123456789", "csrf_token": _form(c)},
                   follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/jobs" and "dm_session" in c.cookies
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "dreammask.audit"]
    assert len(lines) == 5 and all("where=ui_login addr=10.0.0.7" in line for line in lines)


@pytest.mark.parametrize("field", ["csrf_token", "api_key", "next"])
def test_a_file_in_place_of_a_login_field_is_a_422(settings, redis_client, field):
    with client(settings, "10.0.0.9") as c:
        data = {"api_key": "x", "csrf_token": _form(c), "next": "/ui/jobs"}
        data.pop(field)
        r = c.post("/ui/login", data=data, files={field: ("f.txt", b"not text", "text/plain")},
                   follow_redirects=False)
        assert r.status_code == 422 and field in r.json()["detail"]
