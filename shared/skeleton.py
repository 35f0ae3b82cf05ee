"""The one skeleton every stage runs in. A stage module supplies only its work (the `handler` of its
`StageDef`); the skeleton does the rest from the chain declaration (`shared/chain.py`). `run_stage` is what
every Celery task and the in-process runner call:

per-scene stage: claim the batch (skip a cancelled or finished job), drop scenes whose output exists, call the work,
record done and failed scenes, send the next stage's batches, and — after the last per-scene stage — count
the scenes finished and trigger the per-job finisher when the job's last scene finished.

per-job stage: skip a cancelled job, call the work, then fan its scenes out to the next (per-scene) stage
or send the next per-job stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .chain import batches
from .guarded_store import JobCancelled

log = logging.getLogger(__name__)


@dataclass
class SceneResult:
    """What a per-scene stage's work did with the scenes it was given: each is done or failed (reason)."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def fail(self, scene_id: str, reason: str) -> None:
        self.failed[scene_id] = reason


@dataclass
class JobResult:
    """What a per-job stage's work decided. `proceed=False` ends the chain here (the work set the job's
    state, e.g. failed); `scenes` are fanned out to a following per-scene stage, in batches of
    `batch_size` when the work wants larger ones than the setting (a backend's preferred size)."""

    proceed: bool = True
    scenes: list[str] = field(default_factory=list)
    batch_size: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


class PartialWork(Exception):
    """Raised by a per-scene stage's work that stopped part-way: the scenes in `result.done` landed and are
    counted now (the counters stay exact while the task waits for its retry); `cause` is raised on, so the
    task retries and finds those scenes done."""

    def __init__(self, result: SceneResult, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.result, self.cause = result, cause


SceneWork = Callable[[Any, str, list[str]], SceneResult]
JobWork = Callable[[Any, str], JobResult]


def run_stage(rt, stage: str, job_id: str, scene_ids: list[str] | None = None) -> dict:
    """Run one message of `stage` (a per-scene stage takes scene ids, a per-job stage none) with the work its
    `StageDef.handler` names."""
    st = rt.chain[stage]
    if st.per_scene:
        if scene_ids is None:
            raise TypeError(f"stage {stage!r} runs per scene: give the message's scene ids")
        return run_scene_stage(rt, stage, job_id, list(scene_ids), st.work)
    if scene_ids is not None:
        raise TypeError(f"stage {stage!r} runs per job: its message carries no scene ids")
    return run_job_stage(rt, stage, job_id, st.work)


def run_scene_stage(rt, stage: str, job_id: str, scene_ids: list[str], work: SceneWork) -> dict:
    chain, tr = rt.chain, rt.tracker
    skip = _claim(tr, job_id)
    if skip:
        return {"skipped": skip}
    todo, ready = tr.split_done(job_id, stage, scene_ids)
    result = SceneResult()
    last = False
    if todo:
        t0 = time.perf_counter()
        try:
            result = work(rt, job_id, todo)
        except JobCancelled:
            return {"skipped": "cancelled"}
        except PartialWork as e:
            if isinstance(e.cause, JobCancelled) or tr.is_cancelled(job_id):
                return {"skipped": "cancelled"}
            tr.mark_done(job_id, stage, e.result.done, time.perf_counter() - t0)
            raise e.cause from None
        if tr.is_cancelled(job_id):
            # Cancelled while the work ran: its writes were refused; record and forward nothing.
            return {"skipped": "cancelled"}
        seconds = time.perf_counter() - t0
        answered = set(result.done) | set(result.failed)
        for sid in todo:
            if sid not in answered:  # a stage must account for every scene it was given
                result.fail(sid, f"{stage} returned no result for the scene")
        for sid, reason in result.failed.items():
            last = tr.mark_failed(job_id, stage, sid, reason) or last
        tr.mark_done(job_id, stage, result.done, seconds)
        ready += result.done
    ready.sort()
    nxt = chain.next_of(stage)
    if nxt is not None and nxt.per_scene:
        for batch in batches(ready, chain.batch_size(nxt.name, rt.settings)):
            rt.dispatcher.send(nxt.task, job_id, batch)
    else:
        last = tr.finish_scenes(job_id, ready) or last
    if last:
        trigger_finisher(rt, job_id)
    return {**result.info, "done": len(result.done), "failed": len(result.failed), "forwarded": len(ready)}


def _claim(tr, job_id: str) -> str | None:
    """Why this message's work must not run (None: run it). A cancelled job does nothing more; a finished
    one neither: a message redelivered after the end recreates no counters (`resume` reopens a job)."""
    if tr.is_cancelled(job_id):
        return "cancelled"
    if tr.is_finished(job_id):
        return "finished"
    return None


def trigger_finisher(rt, job_id: str) -> None:
    """Every scene is finished: send the per-job stage that follows the scenes (idempotent downstream)."""
    rt.dispatcher.send(rt.chain.finisher.task, job_id)


def run_job_stage(rt, stage: str, job_id: str, work: JobWork) -> dict:
    chain, tr = rt.chain, rt.tracker
    skip = _claim(tr, job_id)
    if skip:
        return {"skipped": skip}
    # The work counts its own seconds: a redelivered per-job message that only re-sends must not add any.
    try:
        result = work(rt, job_id)
    except JobCancelled:
        return {"skipped": "cancelled"}
    if tr.is_cancelled(job_id):
        return {"skipped": "cancelled"}
    nxt = chain.next_of(stage)
    if result.proceed and nxt is not None:
        if nxt.per_scene:
            size = max(chain.batch_size(nxt.name, rt.settings), result.batch_size or 0)
            for batch in batches(result.scenes, size):
                rt.dispatcher.send(nxt.task, job_id, batch)
        else:
            rt.dispatcher.send(nxt.task, job_id)
    return result.info
