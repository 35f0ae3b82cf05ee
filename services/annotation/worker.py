"""The annotation worker: `celery -A dreammask.services.annotation.worker worker -Q annotation --concurrency=1`."""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("annotation")

from . import tasks  # noqa: E402,F401  (registers the tasks on this app)
