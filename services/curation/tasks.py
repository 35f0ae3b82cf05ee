"""Curation task: thin, named, JSON args (ids only); the work is in `stage`."""

from celery import shared_task

from dreammask.shared.celery_app import TASK_CURATE, TASK_PUBLISH
from dreammask.shared.runtime import get_runtime
from dreammask.shared.tasks import TRANSIENT_ERRORS, StageTask

from . import publish, stage


@shared_task(name=TASK_CURATE, base=StageTask, bind=True, stage="curation")
def curate(self, job_id: str) -> dict:
    return stage.curate(get_runtime(), job_id)


@shared_task(name=TASK_PUBLISH, bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, max_retries=5)
def publish_version(self, job_id: str, version: int) -> dict:
    return publish.publish_version(get_runtime(), job_id, version)
