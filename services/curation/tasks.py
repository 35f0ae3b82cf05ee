"""Curation tasks: thin, named, JSON args (ids only); the work is in `stage`."""

from celery import shared_task

from dreammask.shared.celery_app import TASK_PUBLISH
from dreammask.shared.runtime import get_runtime
from dreammask.shared.tasks import StageTask, stage_task_options

from . import publish, stage


@shared_task(**stage_task_options("curation"))
def curate_scenes(self, job_id: str, scene_ids: list[str]) -> dict:
    return stage.curate_scenes(get_runtime(), job_id, scene_ids)


@shared_task(**stage_task_options("assemble"))
def assemble(self, job_id: str) -> dict:
    return stage.assemble(get_runtime(), job_id)


class PublishTask(StageTask):
    """Retries like a stage task; a final failure is recorded on the version (by `publish_version`),
    not on the job, which has succeeded already."""

    abstract = True

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        pass


@shared_task(name=TASK_PUBLISH, base=PublishTask, bind=True, stage="curation")
def publish_version(self, job_id: str, version: int) -> dict:
    return publish.publish_version(get_runtime(), job_id, version)
