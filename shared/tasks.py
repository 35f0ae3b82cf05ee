"""The one base class of every stage task: retries with backoff on transient faults, and on final failure
records why — per scene for scene batches, on the job for job-level tasks. Tasks stay thin: they take
ids and call a plain stage function."""

from __future__ import annotations

import logging
import random

import celery
import redis

from .settings import get_settings
from .storage import StorageError

log = logging.getLogger(__name__)

# Faults worth retrying: the broker, the store or a model server is briefly unreachable.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StorageError, redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError,
)


def retry_delay(retries: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with jitter: base·2^n capped at max_s, stretched by up to 25 % at random so that
    tasks failing together do not come back together. Never shorter than the un-jittered delay, so the
    retry budget (`retry_budget_s`) is a floor."""
    return min(max_s, base_s * 2 ** retries) * (1 + 0.25 * random.random())


def retry_budget_s(max_retries: int, base_s: float, max_s: float) -> float:
    """The least outage a task rides out on its retries: the sum of its un-jittered delays."""
    return sum(min(max_s, base_s * 2**n) for n in range(max_retries))


class StageTask(celery.Task):
    abstract = True
    stage: str = ""
    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_jitter = False  # jitter is added in `retry`, on top of the delay (see retry_delay)
    acks_late = True
    reject_on_worker_lost = True

    def __init__(self):
        s = get_settings()
        self.max_retries = s.task_max_retries
        self.retry_backoff_max = s.retry_backoff_max_s

    def retry(self, args=None, kwargs=None, exc=None, throw=True, eta=None, countdown=None, max_retries=None,
              **options):
        if countdown is not None and eta is None:
            countdown = retry_delay(self.request.retries, self.retry_backoff, self.retry_backoff_max)
        return super().retry(args=args, kwargs=kwargs, exc=exc, throw=throw, eta=eta, countdown=countdown,
                             max_retries=max_retries, **options)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        from .guarded_store import JobCancelled
        from .runtime import get_runtime
        from .skeleton import trigger_finisher

        job_id = args[0] if args else kwargs.get("job_id")
        scene_ids = args[1] if len(args) > 1 else kwargs.get("scene_ids")
        reason = f"{self.stage} failed: {type(exc).__name__}: {exc}"
        try:
            cancelled = isinstance(exc, JobCancelled) or bool(job_id and get_runtime().tracker.is_cancelled(job_id))
        except Exception:  # noqa: BLE001 - Redis away: record the failure as usual
            cancelled = False
        if cancelled:
            # The job was cancelled or deleted while this task ran: nothing to record.
            log.info("task %s (%s) for job %s stopped: the job was cancelled", self.name, task_id, job_id)
            return
        if isinstance(exc, TRANSIENT_ERRORS):
            # Not a permanent cause: the scenes stay outstanding (no output, no failure) and the supervisor
            # re-enqueues them once the job stops progressing; it gives up only after repeated heals.
            log.error("task %s (%s) for job %s ran out of retries on a transient fault; left to the "
                      "supervisor: %s", self.name, task_id, job_id, reason)
            try:
                get_runtime().tracker.note_transient(job_id, self.stage, reason)
            except Exception:  # noqa: BLE001 - Redis away too: the supervisor still sees the missing outputs
                log.warning("could not note the transient fault of job %s", job_id)
            return
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


def register_stage_tasks(app: celery.Celery, service: str, chain=None) -> list[str]:
    """Register on `app` one task per stage of `chain` that `service` runs, named as its `StageDef` says.
    Each task takes ids only and calls the skeleton, which runs the stage's handler. Returns the names."""
    from .chain import DEFAULT_CHAIN

    names = []
    for st in (chain or DEFAULT_CHAIN).stages_of(service):
        app.task(name=st.task, base=StageTask, bind=True, shared=False, stage=st.name)(_stage_task_body(st.name))
        names.append(st.task)
    return names


def _stage_task_body(stage: str):
    def run(self, job_id: str, scene_ids: list[str] | None = None) -> dict:
        from .runtime import get_runtime
        from .skeleton import run_stage

        return run_stage(get_runtime(), stage, job_id, scene_ids)

    run.__name__ = run.__qualname__ = f"run_{stage}"
    return run
