"""Synthesis task: thin, named, JSON args (ids only); the work is in `stage`."""

from celery import shared_task

from dreammask.shared.celery_app import TASK_RENDER
from dreammask.shared.runtime import get_runtime
from dreammask.shared.tasks import StageTask

from . import stage


@shared_task(name=TASK_RENDER, base=StageTask, bind=True, stage="synthesis")
def render(self, job_id: str, scene_ids: list[str]) -> dict:
    return stage.render_scenes(get_runtime(), job_id, scene_ids)
