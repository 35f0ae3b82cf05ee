"""The job record. Durable state lives in object storage (spec, status transitions, stage outputs,
failures); Redis keeps only fast counters (sets of finished scenes per stage) that `rebuild_counters`
recreates from storage."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import redis

from . import keys
from .schemas import (
    JobSpec,
    JobState,
    JobStatus,
    SceneFailure,
    StageCounts,
    StoredJobSpec,
    Transition,
    utcnow,
)
from .storage import ObjectNotFound, ObjectStore

# Stages whose per-scene progress is counted; "curation" is counted per job.
SCENE_STAGES = ("layout", "synthesis", "annotation")
STAGES = ("association", *SCENE_STAGES, "curation")


class JobNotFound(LookupError):
    pass


def new_job_id() -> str:
    # Time-sortable: listing keys in order lists jobs in creation order.
    return f"j{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S')}{secrets.token_hex(4)}"


class JobTracker:
    def __init__(self, store: ObjectStore, redis_client: redis.Redis, prefix: str = "dreammask"):
        self.store = store
        self.r = redis_client
        self.prefix = prefix
        self._specs: dict[str, StoredJobSpec] = {}

    # ------------------------------------------------------------ redis keys
    def _k(self, job_id: str, *parts: str) -> str:
        return ":".join((self.prefix, "job", job_id, *parts))

    # ------------------------------------------------------------ creation and reading
    def create(self, spec: JobSpec, tenant: str, train_categories: list[str]) -> StoredJobSpec:
        now = utcnow()
        stored = StoredJobSpec(
            job_id=new_job_id(), tenant=tenant, created_at=now, spec=spec, train_categories=train_categories
        )
        job_id = stored.job_id
        self.store.put_json(keys.spec(job_id), stored)
        status = JobStatus(
            job_id=job_id, tenant=tenant, state=JobState.queued, created_at=now, updated_at=now,
            planned_scenes=spec.num_scenes, transitions=[Transition(state=JobState.queued, at=now)],
        )
        self.store.put_json(keys.status(job_id), status)
        self.store.put_bytes(keys.tenant_job_marker(tenant, job_id), b"")
        return stored

    def spec(self, job_id: str) -> StoredJobSpec:
        # A job's spec never changes once written: every task of a worker process reads it once.
        cached = self._specs.get(job_id)
        if cached is not None:
            return cached
        try:
            spec = self.store.get_model(keys.spec(job_id), StoredJobSpec)
        except ObjectNotFound:
            raise JobNotFound(job_id) from None
        if len(self._specs) > 1000:
            self._specs.clear()
        self._specs[job_id] = spec
        return spec

    def status(self, job_id: str) -> JobStatus:
        try:
            return self.store.get_model(keys.status(job_id), JobStatus)
        except ObjectNotFound:
            raise JobNotFound(job_id) from None

    def list_jobs(self, tenant: str) -> list[str]:
        prefix = keys.tenant_jobs_prefix(tenant)
        return [k[len(prefix):] for k in self.store.list(prefix)]

    # ------------------------------------------------------------ state transitions
    def transition(self, job_id: str, state: JobState, reason: str | None = None,
                   *, force: bool = False, **fields) -> JobStatus:
        """Move the job to `state`. Terminal states stick unless `force` (resume)."""
        # One writer at a time per job: a Redis lock, since several worker processes may finish together.
        with self.r.lock(self._k(job_id, "status-lock"), timeout=30, blocking_timeout=30):
            st = self.status(job_id)
            if st.state.terminal and not force:
                return st
            if st.state == state and not fields and reason is None:
                return st
            now = utcnow()
            if st.state != state or reason:
                st.transitions.append(Transition(state=state, at=now, reason=reason))
            st.state = state
            st.updated_at = now
            if state in (JobState.failed, JobState.cancelled) and reason:
                st.error = reason
            if state in (JobState.running, JobState.queued):
                st.error = None
            for k, v in fields.items():
                setattr(st, k, v)
            self.store.put_json(keys.status(job_id), st)
            return st

    def cancel(self, job_id: str) -> JobStatus:
        self.r.set(self._k(job_id, "cancelled"), 1)
        return self.transition(job_id, JobState.cancelled, "cancelled by the client")

    def is_cancelled(self, job_id: str) -> bool:
        # The flag is enough: the durable state is in status.json, and if Redis is lost the queued work is
        # lost with it, so nothing runs for the job until `resume`, which decides afresh.
        return bool(self.r.exists(self._k(job_id, "cancelled")))

    # ------------------------------------------------------------ per-scene progress
    def split_done(self, job_id: str, stage: str, scene_ids: list[str]) -> tuple[list[str], list[str]]:
        """(scenes still to do, scenes whose output for `stage` exists): what makes a redelivery harmless."""
        output = keys.SCENE_OUTPUTS[stage]
        done = {s for s in scene_ids if self.store.exists(output(job_id, s))}
        return [s for s in scene_ids if s not in done], [s for s in scene_ids if s in done]

    def mark_done(self, job_id: str, stage: str, scene_ids: list[str], seconds: float = 0.0) -> None:
        if not scene_ids:
            return
        pipe = self.r.pipeline()
        pipe.sadd(self._k(job_id, "done", stage), *scene_ids)
        pipe.hincrbyfloat(self._k(job_id, "seconds"), stage, seconds)
        pipe.execute()

    def mark_failed(self, job_id: str, stage: str, scene_id: str, reason: str) -> bool:
        """Record a failed scene durably. Returns True when this call made the scene finished."""
        self.store.put_json(keys.failure(job_id, scene_id),
                            SceneFailure(job_id=job_id, scene_id=scene_id, stage=stage, reason=reason[:2000]))
        self.r.sadd(self._k(job_id, "failed", stage), scene_id)
        return self.finish_scenes(job_id, [scene_id])

    def finish_scenes(self, job_id: str, scene_ids: list[str]) -> bool:
        """Count scenes as finished (annotated or failed). True when the job's last scene just finished."""
        if not scene_ids:
            return False
        pipe = self.r.pipeline()
        pipe.sadd(self._k(job_id, "finished"), *scene_ids)
        pipe.scard(self._k(job_id, "finished"))
        added, count = pipe.execute()
        planned = self.status(job_id).planned_scenes
        # Only the call that added the last scene triggers curation (curation is idempotent anyway).
        return bool(added) and count >= planned

    def counts(self, job_id: str, planned: int) -> dict[str, StageCounts]:
        pipe = self.r.pipeline()
        for stage in SCENE_STAGES:
            pipe.scard(self._k(job_id, "done", stage))
            pipe.scard(self._k(job_id, "failed", stage))
        pipe.hgetall(self._k(job_id, "seconds"))
        *cards, secs = pipe.execute()
        secs = {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in secs.items()}
        out = {}
        assoc_done = 1 if self.store.exists(keys.categories(job_id)) else 0
        out["association"] = StageCounts(planned=1, done=assoc_done, seconds=secs.get("association", 0.0))
        for i, stage in enumerate(SCENE_STAGES):
            out[stage] = StageCounts(planned=planned, done=cards[2 * i], failed=cards[2 * i + 1],
                                     seconds=secs.get(stage, 0.0))
        ds = keys.dataset_manifest(keys.dataset_id_for_job(job_id))
        out["curation"] = StageCounts(planned=1, done=1 if self.store.exists(ds) else 0,
                                      seconds=secs.get("curation", 0.0))
        return out

    def failures(self, job_id: str, limit: int = 50) -> list[SceneFailure]:
        out = []
        for k in self.store.list(keys.job_prefix(job_id) + "failures/"):
            f = self.store.try_get_model(k, SceneFailure)
            if f:
                out.append(f)
            if len(out) >= limit:
                break
        return out

    def add_seconds(self, job_id: str, stage: str, seconds: float) -> None:
        self.r.hincrbyfloat(self._k(job_id, "seconds"), stage, seconds)

    # ------------------------------------------------------------ recovery
    def clear_counters(self, job_id: str) -> None:
        ks = [self._k(job_id, "finished"), self._k(job_id, "cancelled")]
        for stage in SCENE_STAGES:
            ks += [self._k(job_id, "done", stage), self._k(job_id, "failed", stage)]
        self.r.delete(*ks)

    def rebuild_counters(self, job_id: str, scene_ids: list[str], *, drop_failures: bool) -> dict[str, list[str]]:
        """Recreate Redis counters from storage. Returns, per stage, the scenes whose output is missing."""
        self.clear_counters(job_id)
        prefix = keys.job_prefix(job_id)
        present = {
            "layout": {k.rsplit("/", 1)[1][:-5] for k in self.store.list(prefix + "layouts/")},
            "synthesis": {k.rsplit("/", 1)[1][:-4] for k in self.store.list(prefix + "images/")},
            "annotation": {k.rsplit("/", 1)[1][:-5] for k in self.store.list(prefix + "annotations/")},
        }
        failed = {k.rsplit("/", 1)[1][:-5] for k in self.store.list(prefix + "failures/")}
        if drop_failures:
            for sid in failed:
                self.store.delete(keys.failure(job_id, sid))
            failed = set()
        for stage, done in present.items():
            if done:
                self.r.sadd(self._k(job_id, "done", stage), *done)
        finished = present["annotation"] | failed
        if finished:
            self.r.sadd(self._k(job_id, "finished"), *finished)
        missing = {}
        for stage in SCENE_STAGES:
            missing[stage] = [s for s in scene_ids if s not in present[stage] and s not in failed]
        return missing
