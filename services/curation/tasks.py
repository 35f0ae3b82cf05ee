"""Curation task: thin, named, JSON args (ids only); the work is in `stage`."""

from celery import shared_task

from dreammask.shared.celery_app import TASK_CURATE, TASK_PUBLISH
from dreammask.shared.runtime import get_runtime
from dreammask.shared.tasks import StageTask

from . import publish, stage


@shared_task(name=TASK_CURATE, base=StageTask, bind=True, stage="curation")
def curate(self, job_id: str) -> dict:
    return stage.curate(get_runtime(), job_id)


class PublishTask(StageTask):
    """Retries like a stage task; a final failure is recorded on the version (by `publish_version`),
    not on the job, which has succeeded already."""

    abstract = True

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        pass


@shared_task(name=TASK_PUBLISH, base=PublishTask, bind=True, stage="curation")
def publish_version(self, job_id: str, version: int) -> dict:
    return publish.publish_version(get_runtime(), job_id, version)
