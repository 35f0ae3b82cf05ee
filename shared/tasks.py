"""The one base class of every stage task: retries with backoff on transient faults, and on final failure
records why — per scene for scene batches, on the job for job-level tasks. Tasks stay thin: they take
ids and call a plain stage function."""

from __future__ import annotations

import logging

import celery
import redis

from .settings import get_settings
from .storage import StorageError

log = logging.getLogger(__name__)

# Faults worth retrying: the broker, the store or a model server is briefly unreachable.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StorageError, redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError,
)


class StageTask(celery.Task):
    abstract = True
    stage: str = ""
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_jitter = True
    acks_late = True
    reject_on_worker_lost = True

    def __init__(self):
        s = get_settings()
        self.max_retries = s.task_max_retries
        self.retry_backoff_max = s.retry_backoff_max_s

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        from .runtime import get_runtime
        from .skeleton import trigger_finisher

        job_id = args[0] if args else kwargs.get("job_id")
        scene_ids = args[1] if len(args) > 1 else kwargs.get("scene_ids")
        reason = f"{self.stage} failed: {type(exc).__name__}: {exc}"
        log.error("task %s (%s) for job %s failed: %s", self.name, task_id, job_id, reason)
        try:
            rt = get_runtime()
            if scene_ids:
                last = False
                for sid in scene_ids:
                    last = rt.tracker.mark_failed(job_id, self.stage, sid, reason) or last
                if last:
                    trigger_finisher(rt, job_id)
            else:
                from .schemas import JobState

                rt.tracker.transition(job_id, JobState.failed, reason)
        except Exception:  # noqa: BLE001 - recording the failure must not mask the original error
            log.exception("could not record the failure of job %s", job_id)


def stage_task_options(stage: str) -> dict:
    """The Celery task options of a chain stage: its declared task name, this base class, its stage."""
    from .chain import DEFAULT_CHAIN

    return {"name": DEFAULT_CHAIN[stage].task, "base": StageTask, "bind": True, "stage": stage}
