from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings

KEYS = {"key-alice": "alice", "key-bob": "bob"}


@pytest.fixture()
def api_settings(tmp_path, redis_url):
    return Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys=KEYS,
                    max_scenes_per_job=100, public_base_url="http://api.test")


@pytest.fixture()
def api(api_settings, redis_client):
    rt = build_runtime(api_settings)
    app = create_app(api_settings, rt)
    with TestClient(app, base_url="http://api.test") as client:
        client.rt = rt
        yield client


@pytest.fixture()
def alice():
    return {"Authorization": "Bearer key-alice"}


@pytest.fixture()
def bob():
    return {"Authorization": "Bearer key-bob"}


@pytest.fixture()
def all_at_once():
    """`run(fn, n)`: fn(0) ... fn(n - 1) in n threads released together by a barrier (races on quotas);
    returns their results in order."""
    def run(fn, n):
        barrier = threading.Barrier(n)

        def call(i):
            barrier.wait()
            return fn(i)

        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(call, range(n)))
    return run
