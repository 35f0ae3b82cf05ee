"""Curation task: thin, named, JSON args (ids only); the work is in `stage`."""

from celery import shared_task

from dreammask.shared.celery_app import TASK_CURATE
from dreammask.shared.runtime import get_runtime
from dreammask.shared.tasks import StageTask

from . import stage


@shared_task(name=TASK_CURATE, base=StageTask, bind=True, stage="curation")
def curate(self, job_id: str) -> dict:
    return stage.curate(get_runtime(), job_id)
