"""The training task: thin, named `dreammask.training.run`, JSON args (the training id only)."""

from __future__ import annotations

import logging

import celery
from celery import shared_task

from dreammask.shared.celery_app import TASK_TRAIN

from .settings import TrainerSettings

log = logging.getLogger("dreammask.trainer.service")
_settings = TrainerSettings()


class TrainingTask(celery.Task):
    abstract = True
    # Acknowledged on receipt, not at the end: a training outlasts the broker's visibility timeout, and a
    # late ack would have Redis hand it to a second worker mid-run. The stored status and checkpoints
    # make a lost run resumable instead (POST /v1/trainings/{id}/resume).
    acks_late = False
    max_retries = 0


@shared_task(name=TASK_TRAIN, base=TrainingTask, bind=True,
             time_limit=_settings.trainer_time_limit_s, soft_time_limit=_settings.trainer_time_limit_s - 60)
def run(self, training_id: str) -> dict:
    from dreammask.shared.storage import store_from_settings

    from .runner import run_training_job

    store = store_from_settings()
    try:
        result = run_training_job(store, training_id, _settings)
    finally:
        _give_back_slot(store, training_id)
    return {"training_id": training_id, "state": result["state"], "iteration": result["iteration"]}


def _give_back_slot(store, training_id: str) -> None:
    """The training ended (succeeded, failed, cancelled): its tenant's training slot frees now. If Redis is
    away, the next submission over the quota finds the training ended and reclaims the slot."""
    import redis

    from dreammask.shared import quotas
    from dreammask.shared.settings import get_settings

    try:
        with redis.Redis.from_url(get_settings().redis_url) as r:
            quotas.training_ended(r, store, training_id)
    except Exception as e:  # noqa: BLE001 - never turn a finished training into a failed task
        log.warning("training %s: could not give its quota slot back (%s); reclaimed later", training_id, e)
