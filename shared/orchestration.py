"""Starting and resuming jobs: what to enqueue, derived from the chain declaration and what storage holds."""

from __future__ import annotations

from . import keys
from .chain import batches
from .runtime import Runtime
from .schemas import CategorySet, JobState


class CannotResume(ValueError):
    pass


def start(rt: Runtime, job_id: str) -> None:
    rt.dispatcher.send(rt.chain.first.task, job_id)


def job_scene_ids(rt: Runtime, job_id: str) -> list[str] | None:
    """The job's scenes, once the association decided them (None before): one per (novel category, image)."""
    cats = rt.store.try_get_model(keys.categories(job_id), CategorySet)
    if cats is None:
        return None
    n = len(cats.novel) * rt.tracker.spec(job_id).spec.images_per_category
    return [keys.scene_id(i) for i in range(n)]


def resume(rt: Runtime, job_id: str) -> dict[str, int]:
    """Rebuild the job's Redis counters from storage and re-enqueue, per stage of the chain, every scene
    whose output is missing while the previous stage's exists. Failed scenes are retried. Safe to call
    repeatedly: stages skip work whose output exists."""
    tr, chain = rt.tracker, rt.chain
    st = tr.status(job_id)
    if st.state == JobState.succeeded:
        raise CannotResume("the job already succeeded; submit a new job to make more data")
    tr.spec(job_id)  # raises JobNotFound for an unknown job
    # Per-job set-up stages (before the scenes): resume at the first whose output is missing.
    for stage in chain.stages:
        if stage.per_scene:
            break
        if not rt.store.exists(stage.output(job_id)):
            tr.clear_counters(job_id)
            tr.transition(job_id, JobState.running, "resumed", force=True)
            rt.dispatcher.send(stage.task, job_id)
            return {stage.name: 1}
    scene_ids = job_scene_ids(rt, job_id) or []
    missing = tr.rebuild_counters(job_id, scene_ids, drop_failures=True)
    tr.transition(job_id, JobState.running, "resumed", force=True, planned_scenes=len(scene_ids))
    enqueued: dict[str, int] = {}
    upstream_missing: set[str] = set()
    for stage in chain.scene_stages:
        # A scene missing an earlier output flows here from that stage; send only those ready for this one.
        todo = [s for s in missing[stage.name] if s not in upstream_missing]
        for b in batches(todo, chain.batch_size(stage.name, rt.settings)):
            rt.dispatcher.send(stage.task, job_id, b)
        enqueued[stage.name] = len(todo)
        upstream_missing = set(missing[stage.name])
    if not any(enqueued.values()):
        rt.dispatcher.send(chain.finisher.task, job_id)
    return enqueued
