from __future__ import annotations

import pytest

from dreammask.services.cli.inprocess import in_process_dispatcher, run_pending
from dreammask.shared.runtime import build_runtime, set_runtime
from dreammask.shared.schemas import JobSpec
from dreammask.shared.settings import Settings


class InProcess:
    """The real stage functions, storage and Redis, with messages delivered in this process in order."""

    def __init__(self, rt):
        self.rt = rt
        self.d = rt.dispatcher

    def create(self, **spec) -> str:
        s = JobSpec(**{"train_categories": ["person", "dog", "car", "building", "sky", "road"], "num_novel": 2,
                       "images_per_category": 2, "image_size": 96, **spec})
        return self.rt.tracker.create(s, "t", s.train_categories).job_id

    def run(self, until: str | None = None) -> None:
        run_pending(self.rt, until)


@pytest.fixture()
def inproc(tmp_path, redis_client, redis_url, shared_cache_dir):
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", cache_dir=shared_cache_dir,
                 synthesis_batch_size=2, annotation_batch_size=2, layout_batch_size=2)
    rt = build_runtime(s, dispatcher=in_process_dispatcher())
    set_runtime(rt)
    yield InProcess(rt)
    set_runtime(None)
