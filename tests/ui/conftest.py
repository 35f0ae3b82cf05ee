from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.services.cli.inprocess import in_process_dispatcher, run_pending
from dreammask.shared.runtime import build_runtime, set_runtime
from dreammask.shared.settings import Settings

KEYS = {"key-alice": "alice", "key-bob": "bob"}
SPEC = {"train_categories": ["person", "dog", "car", "building", "sky", "road"], "num_novel": 2,
        "images_per_category": 3, "image_size": 96, "seed": 7}


@pytest.fixture()
def ui(tmp_path, redis_url, redis_client, shared_cache_dir):
    """The API app on the real stage functions run in this process (messages delivered by `ui.run()`)."""
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", cache_dir=shared_cache_dir,
                 api_keys=KEYS, public_base_url="http://testserver")
    rt = build_runtime(s, dispatcher=in_process_dispatcher())
    set_runtime(rt)
    app = create_app(s, rt)
    with TestClient(app) as client:
        client.rt = rt
        client.run = lambda: run_pending(rt)
        yield client
    set_runtime(None)


@pytest.fixture()
def curated_job(ui):
    """A job of alice's, run to the end through every stage."""
    r = ui.post("/v1/jobs", json=SPEC, headers={"Authorization": "Bearer key-alice"})
    assert r.status_code == 202, r.text
    ui.run()
    job_id = r.json()["job_id"]
    view = ui.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer key-alice"}).json()
    assert view["state"] == "succeeded", view
    return view
