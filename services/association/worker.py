"""The association worker: `celery -A dreammask.services.association.worker worker -Q association --concurrency=1`."""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("association")  # a task per stage of the chain this service runs (shared/chain.py)
