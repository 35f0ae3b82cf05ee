from __future__ import annotations

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
