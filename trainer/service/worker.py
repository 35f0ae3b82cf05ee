"""The training worker: `celery -A dreammask.trainer.service.worker worker -Q training --concurrency=1`.

One worker per machine (or per GPU group); with DREAMMASK_TRAINER_GPUS > 1 each training launches torchrun
on the machine's GPUs.
"""

from dreammask.shared.worker import create_worker_app

app = create_worker_app("training")

from . import tasks  # noqa: E402,F401  (registers the task on this app)
