"""The annotation worker: `celery -A dreammask.services.annotation.worker worker -Q annotation --concurrency=1`."""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("annotation")  # a task per stage of the chain this service runs (shared/chain.py)
