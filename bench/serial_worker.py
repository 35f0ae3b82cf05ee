"""One Celery worker process for every NSS queue, one task at a time: the platform path of
`bench/pipeline.py`'s hop-overhead comparison, serial like the in-process run it is compared with.
(A benchmark fixture: a deployment runs one worker per service.)"""

from dreammask.shared.chain import DEFAULT_CHAIN
from dreammask.shared.tasks import register_stage_tasks
from dreammask.shared.worker import create_worker_app

app = create_worker_app("curation")  # the curation stages; every other service's stages below
for _service in DEFAULT_CHAIN.services:
    if _service != "curation":
        register_stage_tasks(app, _service)

from dreammask.services.curation import tasks as _curation  # noqa: E402,F401  (publish)
