"""One Celery worker process for every NSS queue, one task at a time: the platform path of
`bench/pipeline.py`'s hop-overhead comparison, serial like the in-process run it is compared with.
(A benchmark fixture: a deployment runs one worker per service.)"""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("curation")

from dreammask.services.annotation import tasks as _annotation  # noqa: E402,F401
from dreammask.services.association import tasks as _association  # noqa: E402,F401
from dreammask.services.curation import tasks as _curation  # noqa: E402,F401
from dreammask.services.synthesis import tasks as _synthesis  # noqa: E402,F401
