"""The association worker: `celery -A dreammask.services.association.worker worker -Q association --concurrency=1`."""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("association")

from . import tasks  # noqa: E402,F401  (registers the tasks on this app)
