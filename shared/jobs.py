"""The job record. Durable state lives in object storage (spec, status transitions, stage outputs,
failures); Redis keeps only fast counters (sets of finished scenes per stage) that `rebuild_counters`
recreates from storage."""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from datetime import datetime, timezone

import redis

from . import keys, quotas
from .chain import DEFAULT_CHAIN, Chain
from .plan import PlanMissing
from .schemas import (
    JobLimits,
    JobPlan,
    JobProgress,
    JobSpec,
    JobState,
    JobStatus,
    SceneFailure,
    StageCounts,
    StoredJobSpec,
    Transition,
    utcnow,
)
from .storage import ObjectNotFound, ObjectStore, StorageError

log = logging.getLogger(__name__)
PLAN_CACHE = 8  # plans kept per process (a 20 000-scene plan is about 2 MB of JSON)
# The supervisor's progress record per job (job -> {"sig", "since", "heals"}); here, beside the job's other
# Redis state, because deleting a job forgets it too.
SUPERVISOR_STATE_KEY = "dreammask:supervisor:progress"


class JobNotFound(LookupError):
    pass


def new_job_id() -> str:
    # Time-sortable: listing keys in order lists jobs in creation order.
    return f"j{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S')}{secrets.token_hex(4)}"


class JobTracker:
    def __init__(self, store: ObjectStore, redis_client: redis.Redis, prefix: str = "dreammask",
                 chain: Chain = DEFAULT_CHAIN, keys_ttl_s: int = 7 * 24 * 3600):
        self.chain = chain
        self.keys_ttl_s = keys_ttl_s
        self.store = store
        self.r = redis_client
        self.prefix = prefix
        self._specs: dict[str, StoredJobSpec] = {}
        self._plans: OrderedDict[str, JobPlan] = OrderedDict()

    # ------------------------------------------------------------ redis keys
    def _k(self, job_id: str, *parts: str) -> str:
        return ":".join((self.prefix, "job", job_id, *parts))

    # ------------------------------------------------------------ creation and reading
    def create(self, spec: JobSpec, tenant: str, train_categories: list[str],
               limits: JobLimits | None = None, *, job_id: str | None = None, **extra) -> StoredJobSpec:
        """Store a new job. `limits`: those the spec was checked against at submission (kept with it).
        `job_id`: one chosen beforehand (a caller that records the id before creating the job, so a retry
        finds it instead of making a second); `extra`: further StoredJobSpec fields (`rerender_of`)."""
        now = utcnow()
        stored = StoredJobSpec(
            job_id=job_id or new_job_id(), tenant=tenant, created_at=now, spec=spec,
            train_categories=train_categories, limits=limits, **extra,
        )
        job_id = stored.job_id
        self.store.put_json(keys.spec(job_id), stored)
        status = JobStatus(
            job_id=job_id, tenant=tenant, state=JobState.queued, created_at=now, updated_at=now,
            planned_scenes=spec.num_scenes, transitions=[Transition(state=JobState.queued, at=now)],
        )
        self.store.put_json(keys.status(job_id), status)
        self.store.put_bytes(keys.tenant_job_marker(tenant, job_id), b"")
        try:
            self.watch(job_id)
        except redis.RedisError:  # the supervisor's scan of storage finds it again
            log.warning("job %s is not yet in the supervisor's set (Redis unavailable)", job_id)
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

    def plan(self, job_id: str, required: bool = True) -> JobPlan | None:
        """The job's plan, written once by the association stage. Every stage after association reads it
        (a missing one there is a broken invariant: PlanMissing); `required=False` gives None before it."""
        cached = self._plans.get(job_id)
        if cached is not None:
            self._plans.move_to_end(job_id)
            return cached
        plan = self.store.try_get_model(keys.plan(job_id), JobPlan)
        if plan is None:
            if required:
                raise PlanMissing(f"job {job_id} has no plan yet: the association stage writes it first")
            return None
        self._plans[job_id] = plan
        while len(self._plans) > PLAN_CACHE:
            self._plans.popitem(last=False)
        return plan

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
            was_terminal = st.state.terminal
            if was_terminal and not force:
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
            if "planned_scenes" in fields:
                self.r.set(self._k(job_id, "planned"), st.planned_scenes, ex=self.keys_ttl_s)
            if state.terminal:
                # Storage answers (the status was just written): failures kept in Redis go there now.
                self.flush_pending_failures(job_id)
                self.retire(job_id, st)
                self.r.srem(self.active_key, job_id)
                # The tenant's job slot frees now; what the job stored is measured by the supervisor.
                quotas.release_job(self.r, st.tenant, job_id)
                quotas.schedule_measure(self.r, st.tenant, "job", job_id)
            else:
                if was_terminal:
                    # Reopened (resume): the job takes messages again; its counters come back from storage.
                    self.store.delete(keys.progress(job_id))
                self.r.sadd(self.active_key, job_id)
            return st

    def retire(self, job_id: str, st: JobStatus) -> None:
        """A terminal job's counters leave Redis: their final values are kept in storage (progress.json)
        and the sets are deleted, so Redis does not grow with every scene ever processed. The cancel flag
        stays, with a TTL, for tasks still queued. `resume` rebuilds everything from storage."""
        final = self._live_counts(job_id, st.planned_scenes)
        self.store.put_json(keys.progress(job_id), JobProgress(job_id=job_id, state=st.state.value, stages=final))
        self.r.delete(*self._counter_keys(job_id), self._k(job_id, "transient"))
        self.r.expire(self._k(job_id, "cancelled"), self.keys_ttl_s)

    def cancel(self, job_id: str) -> JobStatus:
        self.r.set(self._k(job_id, "cancelled"), 1)
        return self.transition(job_id, JobState.cancelled, "cancelled by the client")

    def is_cancelled(self, job_id: str) -> bool:
        # The flag is enough: the durable state is in status.json, and if Redis is lost the queued work is
        # lost with it, so nothing runs for the job until `resume`, which decides afresh.
        return bool(self.r.exists(self._k(job_id, "cancelled")))

    # ------------------------------------------------------------ jobs the supervisor watches
    @property
    def active_key(self) -> str:
        return f"{self.prefix}:jobs:active"

    def watch(self, job_id: str) -> None:
        self.r.sadd(self.active_key, job_id)

    def active_jobs(self) -> list[str]:
        return sorted(m.decode() if isinstance(m, bytes) else m for m in self.r.smembers(self.active_key))

    def all_job_ids(self) -> list[str]:
        """Every job in storage (slow: the supervisor's scan after Redis lost its set)."""
        return sorted({k.rsplit("/", 1)[1] for k in self.store.list("tenants/") if "/jobs/" in k})

    # ------------------------------------------------------------ per-scene progress
    def split_done(self, job_id: str, stage: str, scene_ids: list[str]) -> tuple[list[str], list[str]]:
        """(scenes still to do, scenes whose output for `stage` exists): what makes a redelivery harmless.
        Scenes found done are counted again: after a redelivery or a Redis loss the counter must still
        equal the outputs that exist (adding to a set twice counts once)."""
        output = self.chain[stage].output
        done = {s for s in scene_ids if self.store.exists(output(job_id, s))}
        if done:
            pipe = self.r.pipeline()
            pipe.sadd(self._k(job_id, "done", stage), *done)
            pipe.expire(self._k(job_id, "done", stage), self.keys_ttl_s)
            pipe.execute()
        return [s for s in scene_ids if s not in done], [s for s in scene_ids if s in done]

    def mark_done(self, job_id: str, stage: str, scene_ids: list[str], seconds: float = 0.0) -> None:
        if not scene_ids:
            return
        pipe = self.r.pipeline()
        pipe.sadd(self._k(job_id, "done", stage), *scene_ids)
        pipe.hincrbyfloat(self._k(job_id, "seconds"), stage, seconds)
        # Every counter expires unless written again: a job abandoned mid-way leaves nothing in Redis.
        pipe.expire(self._k(job_id, "done", stage), self.keys_ttl_s)
        pipe.expire(self._k(job_id, "seconds"), self.keys_ttl_s)
        pipe.execute()

    def mark_failed(self, job_id: str, stage: str, scene_id: str, reason: str) -> bool:
        """Record a failed scene: in Redis first (the broker: up if this task runs), then in storage; if
        storage is down the supervisor writes it there later (`flush_pending_failures`).
        Returns True when this call made the job's last scene finished."""
        failure = SceneFailure(job_id=job_id, scene_id=scene_id, stage=stage, reason=reason[:2000])
        pipe = self.r.pipeline()
        pipe.hset(self._k(job_id, "pending-failures"), scene_id, failure.model_dump_json())
        pipe.expire(self._k(job_id, "pending-failures"), self.keys_ttl_s)
        pipe.sadd(self._k(job_id, "failed", stage), scene_id)
        pipe.expire(self._k(job_id, "failed", stage), self.keys_ttl_s)
        pipe.execute()
        try:
            self.store.put_json(keys.failure(job_id, scene_id), failure)
            self.r.hdel(self._k(job_id, "pending-failures"), scene_id)
        except StorageError as e:
            log.warning("failure of %s/%s kept in Redis until storage is back: %s", job_id, scene_id, e)
        return self.finish_scenes(job_id, [scene_id])

    def flush_pending_failures(self, job_id: str) -> int:
        """Write the failures recorded in Redis while storage was down. Raises StorageError if it still is."""
        pending = self.r.hgetall(self._k(job_id, "pending-failures"))
        for sid, raw in pending.items():
            sid = sid.decode() if isinstance(sid, bytes) else sid
            self.store.put_json(keys.failure(job_id, sid), SceneFailure.model_validate_json(raw))
            self.r.hdel(self._k(job_id, "pending-failures"), sid)
        return len(pending)

    def note_transient(self, job_id: str, stage: str, reason: str) -> None:
        """The last transient fault that exhausted a task's retries: the reason the supervisor gives if it
        ever gives up on the scenes."""
        pipe = self.r.pipeline()
        pipe.hset(self._k(job_id, "transient"), stage, reason[:2000])
        pipe.expire(self._k(job_id, "transient"), self.keys_ttl_s)
        pipe.execute()

    def last_transient(self, job_id: str) -> dict[str, str]:
        raw = self.r.hgetall(self._k(job_id, "transient"))
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    def planned(self, job_id: str) -> int:
        """Planned scenes, cached in Redis so that counting needs no storage read."""
        cached = self.r.get(self._k(job_id, "planned"))
        if cached is not None:
            return int(cached)
        n = self.status(job_id).planned_scenes
        self.r.set(self._k(job_id, "planned"), n, ex=self.keys_ttl_s)
        return n

    def finish_scenes(self, job_id: str, scene_ids: list[str]) -> bool:
        """Count scenes as finished (through the chain's last per-scene stage, or failed). True when the job's
        last scene just finished."""
        if not scene_ids:
            return False
        pipe = self.r.pipeline()
        pipe.sadd(self._k(job_id, "finished"), *scene_ids)
        pipe.scard(self._k(job_id, "finished"))
        pipe.expire(self._k(job_id, "finished"), self.keys_ttl_s)
        added, count, _ = pipe.execute()
        planned = self.planned(job_id)
        # Only the call that added the last scene triggers curation (curation is idempotent anyway).
        return bool(added) and count >= planned

    def counts(self, job_id: str, planned: int) -> dict[str, StageCounts]:
        """Progress of every stage of the chain: per-scene stages from the Redis sets, per-job stages from
        whether their output exists; for a terminal job whose counters left Redis, its final counts."""
        final = self.store.try_get_model(keys.progress(job_id), JobProgress)
        if final is not None:
            return final.stages
        return self._live_counts(job_id, planned)

    def is_finished(self, job_id: str) -> bool:
        """The job turned terminal and was not resumed since: its counters were retired to storage."""
        return self.store.exists(keys.progress(job_id))

    def _live_counts(self, job_id: str, planned: int) -> dict[str, StageCounts]:
        scene_stages = self.chain.scene_stages
        pipe = self.r.pipeline()
        for st in scene_stages:
            pipe.scard(self._k(job_id, "done", st.name))
            pipe.scard(self._k(job_id, "failed", st.name))
        pipe.hgetall(self._k(job_id, "seconds"))
        *cards, secs = pipe.execute()
        secs = {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in secs.items()}
        per_scene = {st.name: (cards[2 * i], cards[2 * i + 1]) for i, st in enumerate(scene_stages)}
        out = {}
        for st in self.chain:
            if st.per_scene:
                done, failed = per_scene[st.name]
                out[st.name] = StageCounts(planned=planned, done=done, failed=failed, seconds=secs.get(st.name, 0.0))
            else:
                out[st.name] = StageCounts(planned=1, done=1 if self.store.exists(st.output(job_id)) else 0,
                                           seconds=secs.get(st.name, 0.0))
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
        pipe = self.r.pipeline()
        pipe.hincrbyfloat(self._k(job_id, "seconds"), stage, seconds)
        pipe.expire(self._k(job_id, "seconds"), self.keys_ttl_s)
        pipe.execute()

    # ------------------------------------------------------------ recovery
    def _counter_keys(self, job_id: str) -> list[str]:
        ks = [self._k(job_id, "finished"), self._k(job_id, "seconds"), self._k(job_id, "planned")]
        for st in self.chain.scene_stages:
            ks += [self._k(job_id, "done", st.name), self._k(job_id, "failed", st.name)]
        return ks

    def clear_counters(self, job_id: str) -> None:
        self.r.delete(*self._counter_keys(job_id), self._k(job_id, "cancelled"))
        self.store.delete(keys.progress(job_id))

    def scene_outputs(self, job_id: str, stage: str) -> set[str]:
        """The scenes whose output for the per-scene `stage` exists in storage."""
        prefix, suffix = self.chain[stage].output_prefix(job_id)
        return {k[len(prefix):len(k) - len(suffix)] for k in self.store.list(prefix) if k.endswith(suffix)}

    def rebuild_counters(self, job_id: str, scene_ids: list[str], *, drop_failures: bool) -> dict[str, list[str]]:
        """Recreate Redis counters from storage. Returns, per per-scene stage, the scenes whose output is
        missing (failed scenes excluded unless `drop_failures` forgets them so they are retried)."""
        self.clear_counters(job_id)
        present = {st.name: self.scene_outputs(job_id, st.name) for st in self.chain.scene_stages}
        failed = {k.rsplit("/", 1)[1][:-5] for k in self.store.list(keys.job_prefix(job_id) + "failures/")}
        if drop_failures:
            for sid in failed:
                self.store.delete(keys.failure(job_id, sid))
            failed = set()
            self.r.delete(self._k(job_id, "pending-failures"))
        pipe = self.r.pipeline()
        for stage, done in present.items():
            if done:
                pipe.sadd(self._k(job_id, "done", stage), *done)
                pipe.expire(self._k(job_id, "done", stage), self.keys_ttl_s)
        for sid in failed:
            f = self.store.try_get_model(keys.failure(job_id, sid), SceneFailure)
            if f is not None and f.stage in present:
                pipe.sadd(self._k(job_id, "failed", f.stage), sid)
                pipe.expire(self._k(job_id, "failed", f.stage), self.keys_ttl_s)
        finished = present[self.chain.last_scene_stage.name] | failed
        if finished:
            pipe.sadd(self._k(job_id, "finished"), *finished)
            pipe.expire(self._k(job_id, "finished"), self.keys_ttl_s)
        pipe.execute()
        return {stage: [s for s in scene_ids if s not in done and s not in failed] for stage, done in present.items()}
