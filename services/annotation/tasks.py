"""Annotation task: thin, named, JSON args (ids only); the work is in `stage`."""

from celery import shared_task

from dreammask.shared.celery_app import TASK_ANNOTATE
from dreammask.shared.runtime import get_runtime
from dreammask.shared.tasks import StageTask

from . import stage


@shared_task(name=TASK_ANNOTATE, base=StageTask, bind=True, stage="annotation")
def annotate(self, job_id: str, scene_ids: list[str]) -> dict:
    return stage.annotate_scenes(get_runtime(), job_id, scene_ids)
