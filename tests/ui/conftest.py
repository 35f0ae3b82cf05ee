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


class LiveUI:
    """The API served over HTTP on loopback (uvicorn in a thread of the test process) for a browser, with one
    curated job of alice's run through the real stage functions in this process."""

    def __init__(self, url: str, rt, job: dict):
        self.url, self.rt, self.job = url, rt, job
        self.job_id, self.dataset_id = job["job_id"], job["dataset_id"]

    def api(self, key: str = "key-alice"):
        import httpx

        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def run(self) -> None:
        run_pending(self.rt)

    def run_until(self, task: str) -> None:
        """Deliver queued messages up to (not including) the first one for `task`."""
        run_pending(self.rt, until=task)


# Strict enough that the rules reject some instances and some whole samples (min_kept_fraction), so the grid
# shows reasons and the filters have work to do.
LIVE_SPEC = {"name": "review pages", "train_categories": ["person", "dog", "car", "building", "sky", "road"],
             "num_novel": 2, "images_per_category": 4, "image_size": 128, "seed": 11, "max_objects_per_scene": 4,
             "thresholds": {"min_score": 0.8, "min_kept_fraction": 0.75}}


@pytest.fixture(scope="module")
def live_ui(tmp_path_factory, redis_url, shared_cache_dir):
    import threading
    import time

    import redis
    import uvicorn

    from dreammask.services.cli.harness import free_port

    redis.Redis.from_url(redis_url).flushdb()
    s = Settings(redis_url=redis_url, storage_root=tmp_path_factory.mktemp("ui-objects"), cache_dir=shared_cache_dir,
                 api_keys=KEYS, synthesis_batch_size=4, annotation_batch_size=4, layout_batch_size=4)
    rt = build_runtime(s, dispatcher=in_process_dispatcher())
    set_runtime(rt)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(s, rt), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the API did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    import httpx

    with httpx.Client(base_url=url, headers={"Authorization": "Bearer key-alice"}, timeout=30) as c:
        r = c.post("/v1/jobs", json=LIVE_SPEC)
        assert r.status_code == 202, r.text
        run_pending(rt)
        job = c.get(f"/v1/jobs/{r.json()['job_id']}").json()
    assert job["state"] == "succeeded", job
    yield LiveUI(url, rt, job)
    server.should_exit = True
    thread.join(10)
    set_runtime(None)
    redis.Redis.from_url(redis_url).flushdb()
