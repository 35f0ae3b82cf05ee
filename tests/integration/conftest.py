from __future__ import annotations

import pytest

from dreammask.services.annotation import stage as annotation
from dreammask.services.association import stage as association
from dreammask.services.curation import stage as curation
from dreammask.services.synthesis import stage as synthesis
from dreammask.shared import celery_app as names
from dreammask.shared.runtime import InProcessDispatcher, build_runtime, set_runtime
from dreammask.shared.schemas import JobSpec
from dreammask.shared.settings import Settings

HANDLERS = {
    names.TASK_ASSOCIATE: association.associate,
    names.TASK_PLAN_LAYOUTS: association.plan_layouts,
    names.TASK_RENDER: synthesis.render_scenes,
    names.TASK_ANNOTATE: annotation.annotate_scenes,
    names.TASK_CURATE: curation.curate,
}


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
        """Deliver messages; stop (leaving them queued) at the first message for task `until`."""
        while self.d.pending:
            name, args = self.d.pending[0]
            if name == until:
                return
            self.d.pending.popleft()
            HANDLERS[name](self.rt, *args)


@pytest.fixture()
def inproc(tmp_path, redis_client, redis_url, shared_cache_dir):
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", cache_dir=shared_cache_dir,
                 synthesis_batch_size=2, annotation_batch_size=2, layout_batch_size=2)
    rt = build_runtime(s, dispatcher=InProcessDispatcher())
    set_runtime(rt)
    yield InProcess(rt)
    set_runtime(None)
