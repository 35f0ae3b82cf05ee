"""The synthesis worker: `celery -A dreammask.services.synthesis.worker worker -Q synthesis --concurrency=1`."""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("synthesis")

from . import tasks  # noqa: E402,F401  (registers the tasks on this app)
