"""The curation worker: `celery -A dreammask.services.curation.worker worker -Q curation --concurrency=1`."""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("curation")  # a task per stage of the chain this service runs (shared/chain.py)

from . import tasks  # noqa: E402,F401  (registers publish, which is outside the chain, on this app)
