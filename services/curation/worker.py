"""The curation worker: `celery -A dreammask.services.curation.worker worker -Q curation --concurrency=1`."""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("curation")

from . import tasks  # noqa: E402,F401  (registers the tasks on this app)
