from __future__ import annotations

import pytest

from dreammask.services.cli.inprocess import in_process_dispatcher, run_pending
from dreammask.shared.runtime import build_runtime, set_runtime
from dreammask.shared.settings import Settings


class Curation:
    """Synthetic annotated jobs through the real curation steps, messages delivered in this process."""

    def __init__(self, rt):
        self.rt = rt

    def job(self, n: int, **kw) -> str:
        from dreammask.services.curation.synthetic_job import curation_messages, make_job

        job = make_job(self.rt, n, **kw)
        curation_messages(self.rt, job)
        return job

    def run(self, until: str | None = None) -> None:
        run_pending(self.rt, until)


@pytest.fixture()
def curation(tmp_path, redis_client, redis_url):
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", curation_batch_size=4)
    rt = build_runtime(s, dispatcher=in_process_dispatcher())
    set_runtime(rt)
    yield Curation(rt)
    set_runtime(None)
