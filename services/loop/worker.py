"""The loop worker: `celery -A dreammask.services.loop.worker worker -Q loop`. Light (no model, no GPU): it
reads and writes records and sends messages; one process is enough, two are safe (a lock per loop)."""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("loop")

from . import tasks  # noqa: E402,F401  (registers the task on this app)
