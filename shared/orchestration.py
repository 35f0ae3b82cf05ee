"""Starting and resuming jobs: what to enqueue, derived from the chain declaration and what storage holds."""

from __future__ import annotations

from .chain import batches
from .runtime import Runtime
from .schemas import JobState


class CannotResume(ValueError):
    pass


def start(rt: Runtime, job_id: str) -> None:
    rt.dispatcher.send(rt.chain.first.task, job_id)


def job_scene_ids(rt: Runtime, job_id: str) -> list[str] | None:
    """The job's scenes, as its plan records them (None before the association wrote it)."""
    plan = rt.tracker.plan(job_id, required=False)
    return None if plan is None else plan.scene_ids


def resume(rt: Runtime, job_id: str, *, retry_failed: bool = True, reason: str = "resumed") -> dict[str, int]:
    """Rebuild the job's Redis counters from storage and re-enqueue, per stage of the chain, every scene
    whose output is missing while the previous stage's exists. Failed scenes are retried unless
    `retry_failed` is off (the supervisor's heal keeps them). Safe to call repeatedly: stages skip work
    whose output exists."""
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
            tr.transition(job_id, JobState.running, reason, force=True)
            rt.dispatcher.send(stage.task, job_id)
            return {stage.name: 1}
    scene_ids = job_scene_ids(rt, job_id) or []
    if not retry_failed:
        tr.flush_pending_failures(job_id)  # into storage first, so the rebuild sees them
    missing = tr.rebuild_counters(job_id, scene_ids, drop_failures=retry_failed)
    tr.transition(job_id, JobState.running, reason, force=True, planned_scenes=len(scene_ids))
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
