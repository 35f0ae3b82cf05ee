"""Association tasks: thin, named, JSON args (ids only); the work is in `stage`."""

from celery import shared_task

from dreammask.shared.runtime import get_runtime
from dreammask.shared.tasks import stage_task_options

from . import stage


@shared_task(**stage_task_options("association"))
def associate(self, job_id: str) -> dict:
    return stage.associate(get_runtime(), job_id)


@shared_task(**stage_task_options("layout"))
def plan_layouts(self, job_id: str, scene_ids: list[str]) -> dict:
    return stage.plan_layouts(get_runtime(), job_id, scene_ids)
