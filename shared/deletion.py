"""Deleting jobs, datasets, versions and trainings, and the retention rules that do it on a schedule.

What a deletion removes, and only that (every prefix ends in '/', ids are checked, so no other job's or
tenant's key can match):

    job        jobs/{job}/, datasets/ds-{job}/, datasets/ds-{job}-vN/ of each version, tenants/{t}/jobs/{job};
               Redis: its counters, supervisor state and quota entries (the cancel flag stays, with a TTL,
               so queued or running tasks of the job stop: shared/guarded_store.py)
    dataset    datasets/{id}/ (version 1: the curated dataset; vN: also jobs/{job}/versions/{N}.json)
    training   trainings/{id}/, tenants/{t}/trainings/{id}; its slot of the training quota; a running one
               is cancelled first and deleted once it stopped (or its heartbeat went stale)

A job still running is cancelled first. Work already in flight may still write an object after the
deletion (a write past the cancel check, a training's last checkpoint): each deletion is recorded in
`dreammask:deletions` and the supervisor deletes the same prefixes again on every sweep until no task
of the job can still run (the longest task time limit plus the visibility timeout); what it finds then is
counted (`dreammask:deletions:landed`) and removed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import keys, quotas
from . import review as rv
from .jobs import SUPERVISOR_STATE_KEY
from .schemas import JobState
from .storage import ObjectNotFound

log = logging.getLogger("dreammask.deletion")
audit = logging.getLogger("dreammask.audit")

DELETIONS_KEY = "dreammask:deletions"  # HASH "kind|id" -> {"tenant", "prefixes", "keys", "until", "wait"}
LANDED_KEY = "dreammask:deletions:landed"  # objects found and removed after their deletion (a counter)
RETENTION_LOCK = "dreammask:retention:last"
TRAINING_MEASURE_EVERY_S = 600
_VERSION_DS = re.compile(r"^ds-(?P<job>[A-Za-z0-9_.]+?)-v(?P<n>\d+)$")


class DeletionConflict(Exception):
    """The thing cannot be deleted in its present state (a version still being assembled)."""


@dataclass
class Deleted:
    kind: str
    id: str
    objects: int = 0
    cancelled: bool = False
    pending: bool = False  # a running training: deleted once it stopped
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"deleted": self.kind, "id": self.id, "objects": self.objects, "cancelled": self.cancelled,
                "pending": self.pending, **self.detail}


def follow_up_s(settings) -> float:
    """How long a task of a deleted job may still run: the longest time limit plus one visibility timeout."""
    limits = [settings.task_time_limit_s, *settings.queue_time_limits_s.values()]
    return float(max(limits) + settings.visibility_timeout_s)


# A deletion whose first pass has not finished after this long was interrupted (the API process died):
# the supervisor finishes it.
FIRST_PASS_TIMEOUT_S = 300.0


def _register(r, kind: str, owner: str, tenant: str, prefixes: list[str], single: list[str], until: float,
              wait: bool = False) -> None:
    r.hset(DELETIONS_KEY, f"{kind}|{owner}", json.dumps(
        {"tenant": tenant, "prefixes": prefixes, "keys": single, "until": until, "wait": wait,
         "started": time.time(), "first_pass_done": False}))


def _first_pass_done(r, kind: str, owner: str) -> None:
    """The deleting process removed what existed: from now on, what the supervisor finds had landed since."""
    member = f"{kind}|{owner}"
    raw = r.hget(DELETIONS_KEY, member)
    if raw:
        entry = json.loads(raw)
        entry["first_pass_done"] = True
        r.hset(DELETIONS_KEY, member, json.dumps(entry))


def _remove(store, prefixes: list[str], single: list[str]) -> int:
    n = 0
    for k in single:
        if store.exists(k):
            store.delete(k)
            n += 1
    for p in prefixes:
        n += store.delete_prefix(p)
    return n


# ------------------------------------------------------------ jobs

def delete_job(rt, job_id: str, *, reason: str = "deleted by the client", who: str = "") -> Deleted:
    """Cancel the job if it runs, then remove everything it stored. Raises LookupError for no such job."""
    tr, store, r = rt.tracker, rt.store, rt.redis
    stored = tr.spec(job_id)
    tenant = stored.tenant
    out = Deleted("job", job_id)
    try:
        st = tr.status(job_id)
    except LookupError:  # a deletion that stopped half-way: finish it
        st = None
    if st is not None and not st.state.terminal:
        tr.cancel(job_id)
        out.cancelled = True
    # The flag outlives the deletion: a message of the job still queued or running stops on it.
    r.set(tr._k(job_id, "cancelled"), 1, ex=max(tr.keys_ttl_s, int(follow_up_s(rt.settings)) + 60))
    prefixes = quotas.job_keys_prefixes(store, job_id)
    marker = keys.tenant_job_marker(tenant, job_id)
    # Recorded before anything goes, so that the supervisor finishes a deletion this process could not.
    _register(r, "job", job_id, tenant, prefixes, [marker], time.time() + follow_up_s(rt.settings))
    # Gone from the listing and from reads first, then the rest.
    out.objects = _remove(store, [], [marker, keys.spec(job_id)])
    tr._specs.pop(job_id, None)
    out.objects += _remove(store, prefixes, [])
    _first_pass_done(r, "job", job_id)
    _forget_job(rt, tenant, job_id)
    audit.info("delete job=%s tenant=%s objects=%d cancelled=%s by=%s reason=%s", job_id, tenant, out.objects,
               out.cancelled, who or "-", reason)
    return out


def _forget_job(rt, tenant: str, job_id: str) -> None:
    tr, r = rt.tracker, rt.redis
    pipe = r.pipeline()
    pipe.delete(*tr._counter_keys(job_id), tr._k(job_id, "transient"), tr._k(job_id, "pending-failures"))
    pipe.srem(tr.active_key, job_id)
    pipe.hdel(SUPERVISOR_STATE_KEY, job_id)
    pipe.execute()
    quotas.release_job(r, tenant, job_id)
    quotas.measured(r, tenant, "job", job_id, None)


# ------------------------------------------------------------ datasets and versions

def parse_dataset_id(dataset_id: str) -> tuple[str, int]:
    """(job id, version) of a dataset id: ds-{job} is version 1, ds-{job}-vN version N."""
    keys.check_id(dataset_id, "dataset id")
    m = _VERSION_DS.match(dataset_id)
    if m:
        return m.group("job"), int(m.group("n"))
    if not dataset_id.startswith("ds-"):
        raise ValueError(f"invalid dataset id: {dataset_id!r}")
    return dataset_id[3:], 1


def delete_dataset(rt, dataset_id: str, *, tenant: str, reason: str = "deleted by the client",
                   who: str = "") -> Deleted:
    """Delete one dataset: version 1 (the curated one, the job stays) or a published version N >= 2."""
    job_id, n = parse_dataset_id(dataset_id)
    return delete_version(rt, job_id, n, tenant=tenant, reason=reason, who=who)


def delete_version(rt, job_id: str, n: int, *, tenant: str, reason: str = "deleted by the client",
                   who: str = "") -> Deleted:
    store = rt.store
    dataset_id = rv.version_dataset_id(job_id, n)
    out = Deleted("dataset", dataset_id, detail={"job_id": job_id, "version": n})
    if n >= 2:
        rec = store.try_get_model(rv.version(job_id, n), rv.DatasetVersion)
        if rec is not None and rec.state == "pending":
            raise DeletionConflict(f"version {n} of job {job_id} is still being assembled; delete it once it "
                                   "is published or failed")
        out.objects = _remove(store, [keys.dataset_prefix(dataset_id)], [rv.version(job_id, n)])
    else:
        out.objects = _remove(store, [keys.dataset_prefix(dataset_id)], [])
        _clear_dataset_id(rt, job_id, dataset_id)
    quotas.schedule_measure(rt.redis, tenant, "job", job_id)
    audit.info("delete dataset=%s tenant=%s objects=%d by=%s reason=%s", dataset_id, tenant, out.objects,
               who or "-", reason)
    return out


def _clear_dataset_id(rt, job_id: str, dataset_id: str) -> None:
    """The job's record stops pointing at a dataset that is gone (same lock as its transitions)."""
    tr = rt.tracker
    with rt.redis.lock(tr._k(job_id, "status-lock"), timeout=30, blocking_timeout=30):
        try:
            st = tr.status(job_id)
        except LookupError:
            return
        if st.dataset_id == dataset_id:
            st.dataset_id = None
            rt.store.put_json(keys.status(job_id), st)


# ------------------------------------------------------------ trainings

def training_marker(tenant: str, training_id: str) -> str:
    return f"tenants/{keys.check_id(tenant, 'tenant')}/trainings/{keys.check_id(training_id, 'training id')}"


def _training_status(store, training_id: str) -> dict | None:
    try:
        return store.get_json(keys.training_prefix(training_id) + "status.json")
    except ObjectNotFound:
        return None


def _training_stopped(status: dict | None, stale_after_s: float, now: float) -> bool:
    if status is None or status.get("state") in ("succeeded", "failed", "cancelled"):
        return True
    try:
        updated = datetime.fromisoformat(str(status["updated_at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return True
    return now - updated > stale_after_s


def delete_training(rt, training_id: str, *, tenant: str, stale_after_s: float = 900.0,
                    reason: str = "deleted by the client", who: str = "") -> Deleted:
    """A stopped training goes at once; a running one is cancelled and goes once it stopped (`pending`)."""
    store, r, now = rt.store, rt.redis, time.time()
    prefix = keys.training_prefix(training_id)
    marker = training_marker(tenant, training_id)
    out = Deleted("training", training_id)
    status = _training_status(store, training_id)
    until = now + max(follow_up_s(rt.settings), stale_after_s)
    if not _training_stopped(status, stale_after_s, now):
        store.put_bytes(prefix + "cancel", datetime.now(timezone.utc).isoformat().encode(), "text/plain")
        _register(r, "training", training_id, tenant, [prefix], [marker], until, wait=True)
        out.cancelled = out.pending = True
        if status is not None and status.get("state") == "queued":
            # Holds no GPU yet (a worker that takes it now stops on the flag): its slot frees at once; a
            # running one keeps its slot until it stopped.
            quotas.release_training(r, tenant, training_id)
        audit.info("delete training=%s tenant=%s pending (cancelled, deleted once it stopped) by=%s reason=%s",
                   training_id, tenant, who or "-", reason)
        return out
    _register(r, "training", training_id, tenant, [prefix], [marker], until)
    out.objects = _remove(store, [prefix], [marker])
    _first_pass_done(r, "training", training_id)
    quotas.measured(r, tenant, "training", training_id, None)
    quotas.release_training(r, tenant, training_id)
    audit.info("delete training=%s tenant=%s objects=%d by=%s reason=%s", training_id, tenant, out.objects,
               who or "-", reason)
    return out


# ------------------------------------------------------------ the supervisor's part

def sweep_deletions(rt, now: float | None = None, stale_after_s: float = 900.0) -> dict[str, int]:
    """Delete again what each recorded deletion covers (objects that landed since are counted), finish a
    pending training's deletion once it stopped, and forget a deletion once nothing of it can still run."""
    now = time.time() if now is None else now
    store, r = rt.store, rt.redis
    found: dict[str, int] = {}
    for member, raw in r.hgetall(DELETIONS_KEY).items():
        member = member.decode() if isinstance(member, bytes) else member
        entry = json.loads(raw)
        kind, owner = member.split("|", 1)
        if entry.get("wait"):
            status = _training_status(store, owner)
            if not _training_stopped(status, stale_after_s, now):
                continue
            n = _remove(store, entry["prefixes"], entry["keys"])
            quotas.measured(r, entry["tenant"], kind, owner, None)
            # A lost training never gave its slot back: it goes with the training.
            quotas.release_training(r, entry["tenant"], owner)
            entry["wait"], entry["first_pass_done"] = False, True
            r.hset(DELETIONS_KEY, member, json.dumps(entry))
            audit.info("delete training=%s tenant=%s objects=%d (it stopped)", owner, entry["tenant"], n)
            continue
        if not entry.get("first_pass_done", True):
            if now - entry.get("started", 0) < FIRST_PASS_TIMEOUT_S:
                continue  # the deleting process is still at it: deleting alongside would count its objects
            # Interrupted: finish it (what is found was there before the deletion, not landed after it).
            _remove(store, entry["prefixes"], entry["keys"])
            entry["first_pass_done"] = True
            r.hset(DELETIONS_KEY, member, json.dumps(entry))
            log.warning("%s %s: finished a deletion that was interrupted", kind, owner)
            continue
        n = _remove(store, entry["prefixes"], entry["keys"])
        if n:
            found[member] = n
            r.incrby(LANDED_KEY, n)
            log.warning("%s %s: %d object(s) landed after its deletion; removed", kind, owner, n)
        if now > entry["until"]:
            r.hdel(DELETIONS_KEY, member)
    return found


def pending_deletions(r) -> dict[str, dict]:
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in r.hgetall(DELETIONS_KEY).items()}


def _older_than(ts: datetime | None, days: float, now: float) -> bool:
    return days > 0 and ts is not None and ts.timestamp() < now - days * 86400


def apply_retention(rt, now: float | None = None, *, force: bool = False) -> dict[str, list[str]]:
    """Delete cancelled and failed jobs, and versions never published, older than their retention
    (`DREAMMASK_RETENTION_*`). Runs at most once per `retention_interval_s` across supervisors."""
    s, store, tr = rt.settings, rt.store, rt.tracker
    now = time.time() if now is None else now
    out: dict[str, list[str]] = {"jobs": [], "versions": []}
    if not force and not rt.redis.set(RETENTION_LOCK, int(now), nx=True, ex=max(1, int(s.retention_interval_s))):
        return out
    days = {JobState.cancelled: s.retention_cancelled_jobs_days, JobState.failed: s.retention_failed_jobs_days}
    for job_id in tr.all_job_ids():
        try:
            st = tr.status(job_id)
        except (LookupError, ValueError):
            continue
        if st.state in days and _older_than(st.updated_at, days[st.state], now):
            try:
                delete_job(rt, job_id, reason=f"retention: {st.state.value} for more than {days[st.state]:g} days",
                           who="supervisor")
                out["jobs"].append(job_id)
            except LookupError:
                pass
            continue
        for v in rv.list_versions(store, job_id):
            if v.state in ("pending", "failed") and _older_than(v.created_at, s.retention_unpublished_versions_days, now):
                # A pending version that old is stuck, not being assembled: its task is long gone.
                store.delete(rv.version(job_id, v.version))
                store.delete_prefix(keys.dataset_prefix(v.dataset_id))
                quotas.schedule_measure(rt.redis, st.tenant, "job", job_id)
                audit.info("delete dataset=%s tenant=%s reason=retention: version %s for more than %g days",
                           v.dataset_id, st.tenant, v.state, s.retention_unpublished_versions_days)
                out["versions"].append(v.dataset_id)
    return out


def measure_due(rt, now: float | None = None) -> int:
    """Measure the jobs and trainings whose stored bytes are due (finished, changed): replaces estimates."""
    n = 0
    for tenant, kind, owner in quotas.due_measures(rt.redis, now):
        try:
            nbytes = quotas.measure_job(rt.store, owner) if kind == "job" else quotas.measure_training(rt.store, owner)
        except ValueError:
            nbytes = None
        if nbytes == 0 and kind == "job" and not rt.store.exists(keys.spec(owner)):
            nbytes = None  # deleted meanwhile
        quotas.measured(rt.redis, tenant, kind, owner, nbytes)
        if kind == "training" and nbytes and not _training_stopped(_training_status(rt.store, owner), 1e12, 0):
            # A running training adds checkpoints: measured again until it ends.
            quotas.schedule_measure(rt.redis, tenant, kind, owner, delay_s=TRAINING_MEASURE_EVERY_S)
        n += 1
    return n

