"""The CLI as a user runs it: `python -m dreammask.services.cli ...` in a subprocess, against a real API served by
uvicorn on loopback (a thread of the test process) over this session's Redis and a local store. Stage messages
go to an in-process dispatcher, so a test runs a job's stages when it wants them (`live_api.run_pending()`)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import redis
import uvicorn
from cli_helpers import KEY

from dreammask.services.api.main import create_app
from dreammask.services.cli.harness import free_port
from dreammask.services.cli.inprocess import in_process_dispatcher, run_pending
from dreammask.shared.runtime import build_runtime, set_runtime
from dreammask.shared.settings import Settings


class LiveApi:
    def __init__(self, url: str, rt):
        self.url, self.rt = url, rt
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)

    def run_pending(self) -> None:
        run_pending(self.rt)


@pytest.fixture(scope="module")
def live_api(tmp_path_factory, redis_url, shared_cache_dir):
    redis.Redis.from_url(redis_url).flushdb()
    settings = Settings(redis_url=redis_url, storage_root=tmp_path_factory.mktemp("objects"), cache_dir=shared_cache_dir,
                        api_keys={KEY: "cli", "other-key": "other"}, synthesis_batch_size=4,
                        annotation_batch_size=4, layout_batch_size=4)
    rt = build_runtime(settings, dispatcher=in_process_dispatcher())
    set_runtime(rt)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, rt), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the API did not start")
        time.sleep(0.05)
    api = LiveApi(f"http://127.0.0.1:{port}", rt)
    yield api
    api.client.close()
    server.should_exit = True
    thread.join(10)
    set_runtime(None)
    redis.Redis.from_url(redis_url).flushdb()
