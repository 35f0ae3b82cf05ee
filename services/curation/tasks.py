"""Curation's task outside the chain: publishing a reviewed dataset version (the chain's own tasks are
registered from their `StageDef`s by `shared/worker.py`). Thin, named, JSON args (ids only)."""

from celery import shared_task

from dreammask.shared.celery_app import TASK_PUBLISH
from dreammask.shared.runtime import get_runtime
from dreammask.shared.tasks import StageTask

from . import publish


class PublishTask(StageTask):
    """Retries like a stage task; a final failure is recorded on the version (by `publish_version`),
    not on the job, which has succeeded already."""

    abstract = True

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        pass


@shared_task(name=TASK_PUBLISH, base=PublishTask, bind=True, stage="curation")
def publish_version(self, job_id: str, version: int) -> dict:
    return publish.publish_version(get_runtime(), job_id, version)
