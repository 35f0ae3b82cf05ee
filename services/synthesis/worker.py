"""The synthesis worker: `celery -A dreammask.services.synthesis.worker worker -Q synthesis --concurrency=1`."""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("synthesis")  # a task per stage of the chain this service runs (shared/chain.py)
