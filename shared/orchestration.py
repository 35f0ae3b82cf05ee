"""Starting and resuming jobs: what to enqueue, derived from what storage already holds."""

from __future__ import annotations

from . import keys
from .celery_app import TASK_ANNOTATE, TASK_ASSOCIATE, TASK_CURATE, TASK_PLAN_LAYOUTS, TASK_RENDER
from .runtime import Runtime
from .schemas import CategorySet, JobState


class CannotResume(ValueError):
    pass


def start(rt: Runtime, job_id: str) -> None:
    rt.dispatcher.send(TASK_ASSOCIATE, job_id)


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def resume(rt: Runtime, job_id: str, *, retry_failed: bool = True, reason: str = "resumed") -> dict[str, int]:
    """Rebuild the job's Redis counters from storage and re-enqueue every scene whose output is missing.
    Failed scenes are retried unless `retry_failed` is off (the supervisor's heal keeps them).
    Safe to call repeatedly: stages skip work whose output exists."""
    tr = rt.tracker
    st = tr.status(job_id)
    if st.state == JobState.succeeded:
        raise CannotResume("the job already succeeded; submit a new job to make more data")
    stored = tr.spec(job_id)
    cats = rt.store.try_get_model(keys.categories(job_id), CategorySet)
    if cats is None:
        tr.clear_counters(job_id)
        tr.transition(job_id, JobState.running, reason, force=True)
        rt.dispatcher.send(TASK_ASSOCIATE, job_id)
        return {"association": 1}
    n = len(cats.novel) * stored.spec.images_per_category
    scene_ids = [keys.scene_id(i) for i in range(n)]
    if not retry_failed:
        tr.flush_pending_failures(job_id)  # into storage first, so the rebuild sees them
    missing = tr.rebuild_counters(job_id, scene_ids, drop_failures=retry_failed)
    tr.transition(job_id, JobState.running, reason, force=True, planned_scenes=n)
    no_layout = missing["layout"]
    no_image = [s for s in missing["synthesis"] if s not in set(no_layout)]
    no_ann = [s for s in missing["annotation"] if s not in set(missing["synthesis"])]
    s = rt.settings
    for b in _batches(no_layout, s.layout_batch_size):
        rt.dispatcher.send(TASK_PLAN_LAYOUTS, job_id, b)
    for b in _batches(no_image, s.synthesis_batch_size):
        rt.dispatcher.send(TASK_RENDER, job_id, b)
    for b in _batches(no_ann, s.annotation_batch_size):
        rt.dispatcher.send(TASK_ANNOTATE, job_id, b)
    if not (no_layout or no_image or no_ann):
        rt.dispatcher.send(TASK_CURATE, job_id)
    return {"layout": len(no_layout), "synthesis": len(no_image), "annotation": len(no_ann)}
