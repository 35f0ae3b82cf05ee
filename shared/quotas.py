"""Per-tenant quotas, counted in Redis: jobs not yet finished, scenes submitted per UTC day, bytes stored,
trainings not yet finished.

A submission reserves its share of every quota in one Lua script, so concurrent submissions cannot both
take the last slot: the script reads the three counters, and either refuses naming the first quota that
would be exceeded or adds the job to the tenant's active set, its scenes to today's count and an estimate
of its bytes to the tenant's usage, all at once.

    dreammask:quota:{tenant}:active          SET of the tenant's unfinished job ids
    dreammask:quota:{tenant}:trainings       ZSET of the tenant's unfinished training (and evaluation) ids
                                             -> when the slot was taken
    dreammask:quota:{tenant}:scenes:{day}    scenes submitted that UTC day (expires after two days)
    dreammask:quota:{tenant}:bytes           HASH owner -> bytes (owner: a job or training id), and
                                             `_total`, their sum, kept in the same scripts
    dreammask:quota:measure                  ZSET "tenant|kind|id" -> when to measure it in storage

A job leaves the active set when it turns terminal (`JobTracker.transition`) and is queued for measuring;
the supervisor measures what it really stored (its job folder, its dataset and versions) and replaces the
estimate. A deleted job or training gives its bytes back at once. If Redis loses these keys, the
supervisor counts everything again from storage (`recount`); only today's scene count starts from zero.

A training (each holds a GPU) takes a slot of its own quota in another script, before its record is written
(`shared/submission.start_training`: the API's `POST /v1/trainings` and evaluations, a loop round's training,
a resume). It gives the slot back when it turns terminal (the worker, a cancel while queued, a failed
enqueue) and when it is deleted. A slot whose training ended without giving it back (a worker killed
between its last status write and the release) is reclaimed when the quota is found full: the slots are
checked against the trainings' records then, so a lost release never locks a tenant out.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis

from . import keys

log = logging.getLogger("dreammask.quotas")

MEASURE_KEY = "dreammask:quota:measure"
COUNTED_KEY = "dreammask:quota:counted"  # present while the counters are known to match storage
TOTAL = "_total"
# A job's bytes before it is measured: its scenes at this many bytes per pixel (the rendered PNG, its copy
# in the dataset, the label map, thumbnails and records: about 1 MiB per 512 x 512 scene).
BYTES_PER_PIXEL_ESTIMATE = 4
# Retry-After when a job slot is what is missing: when one frees depends on the tenant's jobs.
ACTIVE_RETRY_S = 60
# Retry-After when storage is full: nothing frees it but a deletion (or retention).
BYTES_RETRY_S = 3600
# Retry-After when a training slot is missing: trainings last minutes to days; the client may cancel one.
TRAINING_RETRY_S = 300
# A slot whose training has no record yet is left alone this long: its record is being written.
TRAINING_SLOT_GRACE_S = 300
TRAINING_TERMINAL = ("succeeded", "failed", "cancelled")


def _k(tenant: str, *parts: str) -> str:
    return ":".join(("dreammask:quota", keys.check_id(tenant, "tenant"), *parts))


def active_key(tenant: str) -> str:
    return _k(tenant, "active")


def trainings_key(tenant: str) -> str:
    return _k(tenant, "trainings")


def scenes_key(tenant: str, day: str) -> str:
    return _k(tenant, "scenes", day)


def bytes_key(tenant: str) -> str:
    return _k(tenant, "bytes")


def utc_day(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).strftime("%Y%m%d")


def seconds_to_utc_midnight(now: float | None = None) -> int:
    t = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    midnight = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - t).total_seconds()) + 1)


def job_bytes_estimate(num_scenes: int, image_size: int) -> int:
    return int(num_scenes) * int(image_size) ** 2 * BYTES_PER_PIXEL_ESTIMATE


# KEYS: active set, today's scenes, bytes hash. ARGV: job id, scenes, bytes estimate, limit active, limit
# scenes, limit bytes (0: none), TTL of the day counter. Returns {quota, used} or {"ok", 0}.
_RESERVE = """
local lim_active, lim_scenes, lim_bytes = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local active = redis.call('SCARD', KEYS[1])
if lim_active > 0 and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 and active + 1 > lim_active then
  return {'active_jobs', tostring(active)}
end
local scenes = tonumber(redis.call('GET', KEYS[2]) or '0')
if lim_scenes > 0 and scenes + tonumber(ARGV[2]) > lim_scenes then
  return {'scenes_per_day', tostring(scenes)}
end
local used = tonumber(redis.call('HGET', KEYS[3], '_total') or '0')
if lim_bytes > 0 and used + tonumber(ARGV[3]) > lim_bytes then
  return {'stored_bytes', redis.call('HGET', KEYS[3], '_total') or '0'}
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[7])
local old = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[3], '_total', ARGV[3])
if old then redis.call('HINCRBY', KEYS[3], '_total', '-' .. old) end
return {'ok', '0'}
"""

# KEYS: bytes hash. ARGV: owner, bytes ('' deletes the owner). Keeps `_total` the sum, atomically.
_SET_USAGE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[1], '_total', ARGV[2])
end
if old then redis.call('HINCRBY', KEYS[1], '_total', '-' .. old) end
return redis.call('HGET', KEYS[1], '_total') or '0'
"""


# KEYS: the trainings ZSET. ARGV: training id, limit (0: none), now. Returns -1 when the slot is taken, -2
# when this training already held it (a redelivered loop step, a lost training resumed), else the slots used.
_RESERVE_TRAINING = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -2 end
local used = redis.call('ZCARD', KEYS[1])
local lim = tonumber(ARGV[2])
if lim > 0 and used + 1 > lim then return used end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return -1
"""


# KEYS: bytes hash. ARGV: owner, bytes to add, limit (0: none). Adds them to the owner and `_total` unless
# that takes the total past the limit. Returns {quota, used} or {"ok", total}.
_ADD_BYTES = """
local lim, add = tonumber(ARGV[3]), tonumber(ARGV[2])
local used = tonumber(redis.call('HGET', KEYS[1], '_total') or '0')
if lim > 0 and used + add > lim then
  return {'stored_bytes', redis.call('HGET', KEYS[1], '_total') or '0'}
end
redis.call('HINCRBY', KEYS[1], ARGV[1], add)
return {'ok', tostring(redis.call('HINCRBY', KEYS[1], '_total', add))}
"""


@dataclass
class Limits:
    active_jobs: int
    scenes_per_day: int
    stored_bytes: int
    active_trainings: int = 0

    @classmethod
    def from_settings(cls, s) -> Limits:
        return cls(s.quota_active_jobs, s.quota_scenes_per_day, s.quota_stored_bytes, s.quota_active_trainings)


class QuotaExceeded(Exception):
    """A submission over one of the tenant's quotas: which, its limit, what is used, when to retry."""

    def __init__(self, quota: str, limit: int, used: int, retry_after_s: int, message: str):
        super().__init__(message)
        self.quota, self.limit, self.used, self.retry_after_s, self.message = (
            quota, limit, used, retry_after_s, message)


def exceeded(quota: str, used: int, lim: Limits, asked: int, now: float) -> QuotaExceeded:
    if quota == "active_jobs":
        return QuotaExceeded(quota, lim.active_jobs, used, ACTIVE_RETRY_S,
                             f"quota active_jobs exceeded: {used} of this tenant's jobs are not finished and "
                             f"the quota is {lim.active_jobs}; wait for one to finish, or cancel one "
                             f"(DREAMMASK_QUOTA_ACTIVE_JOBS)")
    if quota == "active_trainings":
        return QuotaExceeded(quota, lim.active_trainings, used, TRAINING_RETRY_S,
                             f"quota active_trainings exceeded: {used} of this tenant's trainings and evaluations "
                             f"are not finished and the quota is {lim.active_trainings}; wait for one to finish, "
                             "cancel one (POST /v1/trainings/{id}/cancel) or delete one (DELETE /v1/trainings/{id})"
                             " (DREAMMASK_QUOTA_ACTIVE_TRAININGS)")
    if quota == "scenes_per_day":
        return QuotaExceeded(quota, lim.scenes_per_day, used, seconds_to_utc_midnight(now),
                             f"quota scenes_per_day exceeded: {used} scenes submitted today (UTC) and this job "
                             f"asks for {asked}; the quota is {lim.scenes_per_day} per day, counted afresh at "
                             f"midnight UTC (DREAMMASK_QUOTA_SCENES_PER_DAY)")
    return QuotaExceeded(quota, lim.stored_bytes, used, BYTES_RETRY_S,
                         f"quota stored_bytes exceeded: this tenant stores {used} bytes, this would need about "
                         f"{asked} more, and the quota is {lim.stored_bytes}; delete jobs, datasets or "
                         f"trainings you no longer need (DELETE /v1/...) (DREAMMASK_QUOTA_STORED_BYTES)")


def reserve_job(r: redis.Redis, tenant: str, job_id: str, scenes: int, est_bytes: int, lim: Limits,
                now: float | None = None) -> None:
    """Take a job slot, its scenes of today's budget and its estimated bytes, or raise QuotaExceeded."""
    now = time.time() if now is None else now
    quota, used = r.eval(_RESERVE, 3, active_key(tenant), scenes_key(tenant, utc_day(now)), bytes_key(tenant),
                         job_id, int(scenes), int(est_bytes), lim.active_jobs, lim.scenes_per_day,
                         lim.stored_bytes, 2 * 86400)
    quota = quota.decode() if isinstance(quota, bytes) else quota
    if quota != "ok":
        asked = int(scenes) if quota == "scenes_per_day" else int(est_bytes)
        raise exceeded(quota, int(used), lim, asked, now)


def check_stored_bytes(r: redis.Redis, tenant: str, lim: Limits) -> None:
    """For what adds data without a reservation of its own (a training): refuse once full. A dataset
    version reserves its estimate instead (`reserve_bytes`)."""
    used = stored_bytes(r, tenant)
    if lim.stored_bytes and used >= lim.stored_bytes:
        raise exceeded("stored_bytes", used, lim, 0, time.time())


def version_bytes_estimate(num_scenes: int, image_size: int) -> int:
    """A dataset version before it is measured: a copy of the job's images and their labels, about half of
    what a job stores per scene (the job also keeps its rendered images, records and thumbnails)."""
    return job_bytes_estimate(num_scenes, image_size) // 2


def reserve_bytes(r: redis.Redis, tenant: str, owner: str, nbytes: int, lim: Limits) -> None:
    """Add an estimate of what is about to be stored (a dataset version) to an owner's bytes, or raise
    QuotaExceeded when it would take the tenant past the quota. Atomic, so concurrent publishes cannot
    both take the last bytes; the supervisor's measurement of the owner replaces the estimate."""
    quota, used = r.eval(_ADD_BYTES, 1, bytes_key(tenant), owner, int(nbytes), lim.stored_bytes)
    quota = quota.decode() if isinstance(quota, bytes) else quota
    if quota != "ok":
        raise exceeded(quota, int(used), lim, int(nbytes), time.time())


def release_job(r: redis.Redis, tenant: str, job_id: str) -> None:
    """The job finished (or was deleted): its slot frees; its bytes are measured later."""
    r.srem(active_key(tenant), job_id)


def active_jobs(r: redis.Redis, tenant: str) -> set[str]:
    return {m.decode() if isinstance(m, bytes) else m for m in r.smembers(active_key(tenant))}


def scenes_today(r: redis.Redis, tenant: str, now: float | None = None) -> int:
    return int(r.get(scenes_key(tenant, utc_day(now))) or 0)


def stored_bytes(r: redis.Redis, tenant: str) -> int:
    return int(r.hget(bytes_key(tenant), TOTAL) or 0)


def usage(r: redis.Redis, tenant: str) -> dict[str, int]:
    raw = r.hgetall(bytes_key(tenant))
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


def set_usage(r: redis.Redis, tenant: str, owner: str, nbytes: int | None) -> int:
    """Record what an owner (job or training id) stores; None forgets it. Returns the tenant's total."""
    return int(r.eval(_SET_USAGE, 1, bytes_key(tenant), owner, "" if nbytes is None else int(nbytes)))


# ------------------------------------------------------------ trainings

def _training_status(store, training_id: str) -> dict | None:
    """A training's status.json as a dict (shared/ does not import the trainer's models); None: no record."""
    from .storage import ObjectNotFound

    try:
        return store.get_json(keys.training_prefix(training_id) + "status.json")
    except (ObjectNotFound, ValueError):
        return None


def _training_state(store, training_id: str) -> str | None:
    st = _training_status(store, training_id)
    return None if st is None else str(st.get("state"))


def reclaim_training_slots(r: redis.Redis, store, tenant: str, now: float | None = None) -> list[str]:
    """Free the slots of trainings that ended or are gone without giving theirs back; returns their ids.
    A slot without a record is kept for TRAINING_SLOT_GRACE_S: its training may be being written."""
    now = time.time() if now is None else now
    freed = []
    for member, taken in r.zrange(trainings_key(tenant), 0, -1, withscores=True):
        tid = member.decode() if isinstance(member, bytes) else member
        state = _training_state(store, tid)
        if state in TRAINING_TERMINAL or (state is None and now - taken > TRAINING_SLOT_GRACE_S):
            # Only this member goes: a concurrent reservation of another training is untouched.
            r.zrem(trainings_key(tenant), tid)
            freed.append(tid)
    if freed:
        log.info("tenant %s: training slots reclaimed from %s (ended without giving them back)", tenant, freed)
    return freed


def reserve_training(r: redis.Redis, tenant: str, training_id: str, lim: Limits, store=None,
                     now: float | None = None) -> bool:
    """Take a training slot for `training_id`, or raise QuotaExceeded (active_trainings). With `store`, a
    full quota is first checked for slots of trainings that already ended (reclaim_training_slots).
    Returns False when the training held its slot already."""
    now = time.time() if now is None else now
    used = int(r.eval(_RESERVE_TRAINING, 1, trainings_key(tenant), training_id, lim.active_trainings, now))
    if used >= 0 and store is not None and reclaim_training_slots(r, store, tenant, now):
        used = int(r.eval(_RESERVE_TRAINING, 1, trainings_key(tenant), training_id, lim.active_trainings, now))
    if used >= 0:
        raise exceeded("active_trainings", used, lim, 1, now)
    return used == -1


def release_training(r: redis.Redis, tenant: str, training_id: str) -> None:
    """The training turned terminal or was deleted: its slot frees."""
    r.zrem(trainings_key(tenant), training_id)


def training_ended(r: redis.Redis, store, training_id: str) -> bool:
    """After a run of the training (the worker, the in-process runner): give its slot back if its record
    says it ended. Returns whether it did."""
    st = _training_status(store, training_id)
    if st is None or st.get("state") not in TRAINING_TERMINAL or not st.get("tenant"):
        return False  # still running, or deleted (the deletion gave the slot back)
    release_training(r, st["tenant"], training_id)
    return True


def active_trainings(r: redis.Redis, tenant: str) -> set[str]:
    return {m.decode() if isinstance(m, bytes) else m for m in r.zrange(trainings_key(tenant), 0, -1)}


# ------------------------------------------------------------ measuring what is stored

def _member(tenant: str, kind: str, owner: str) -> str:
    return f"{tenant}|{kind}|{owner}"


def schedule_measure(r: redis.Redis, tenant: str, kind: str, owner: str, delay_s: float = 0.0) -> None:
    """Ask the supervisor to measure a job's or training's bytes in storage (soon, or after a delay)."""
    r.zadd(MEASURE_KEY, {_member(tenant, kind, owner): time.time() + delay_s})


def due_measures(r: redis.Redis, now: float | None = None, limit: int = 200) -> list[tuple[str, str, str]]:
    now = time.time() if now is None else now
    out = []
    for m in r.zrangebyscore(MEASURE_KEY, "-inf", now, start=0, num=limit):
        m = m.decode() if isinstance(m, bytes) else m
        tenant, kind, owner = m.split("|", 2)
        out.append((tenant, kind, owner))
    return out


def measured(r: redis.Redis, tenant: str, kind: str, owner: str, nbytes: int | None) -> None:
    set_usage(r, tenant, owner, nbytes)
    r.zrem(MEASURE_KEY, _member(tenant, kind, owner))


def job_keys_prefixes(store, job_id: str) -> list[str]:
    """Every prefix that holds a job's bytes: its folder, its dataset and each published version's."""
    from .review import list_versions

    prefixes = [keys.job_prefix(job_id), keys.dataset_prefix(keys.dataset_id_for_job(job_id))]
    for v in list_versions(store, job_id):
        prefixes.append(keys.dataset_prefix(v.dataset_id))
    return prefixes


def measure_prefixes(store, prefixes: list[str]) -> int:
    return sum(size for p in prefixes for _k, size in store.list_sizes(p))


def measure_job(store, job_id: str) -> int:
    return measure_prefixes(store, job_keys_prefixes(store, job_id))


def measure_training(store, training_id: str) -> int:
    return measure_prefixes(store, [keys.training_prefix(training_id)])


def recount(rt) -> dict[str, int]:
    """Rebuild every tenant's counters from storage (after Redis lost them): the unfinished jobs and
    trainings, and the bytes of every job and training. Today's scene count cannot be rebuilt exactly and
    is left as it is."""
    store, r, tr = rt.store, rt.redis, rt.tracker
    totals: dict[str, dict[str, int]] = {}
    active: dict[str, set[str]] = {}
    training: dict[str, set[str]] = {}
    for k in store.list("tenants/"):
        parts = k.split("/")
        if len(parts) != 4 or parts[2] not in ("jobs", "trainings"):
            continue
        tenant, kind, owner = parts[1], parts[2], parts[3]
        try:
            if kind == "jobs":
                nbytes = measure_job(store, owner)
                try:
                    if not tr.status(owner).state.terminal:
                        active.setdefault(tenant, set()).add(owner)
                except LookupError:
                    pass
            else:
                nbytes = measure_training(store, owner)
                if _training_state(store, owner) not in (*TRAINING_TERMINAL, None):
                    training.setdefault(tenant, set()).add(owner)
        except ValueError:  # a marker with an id that is not one
            continue
        totals.setdefault(tenant, {})[owner] = nbytes
    now = time.time()
    for tenant in set(totals) | set(active) | set(training):
        owners = totals.get(tenant, {})
        pipe = r.pipeline()
        pipe.delete(bytes_key(tenant), active_key(tenant), trainings_key(tenant))
        if owners:
            pipe.hset(bytes_key(tenant), mapping={**owners, TOTAL: sum(owners.values())})
        if active.get(tenant):
            pipe.sadd(active_key(tenant), *active[tenant])
        if training.get(tenant):
            pipe.zadd(trainings_key(tenant), {t: now for t in training[tenant]})
        pipe.execute()
    r.set(COUNTED_KEY, json.dumps({"at": time.time(), "tenants": len(totals)}))
    log.info("quota counters rebuilt from storage for %d tenants", len(totals))
    return {t: sum(o.values()) for t, o in totals.items()}


def counted(r: redis.Redis) -> bool:
    return bool(r.exists(COUNTED_KEY))


# ------------------------------------------------------------ a new job (shared/submission.py)
def reserve_new_job(rt, tenant: str, job_id: str, spec) -> None:
    """Raises QuotaExceeded (the API answers 429) when the job would take the tenant over a quota.

    With Redis (the broker) down the job is saved unreserved, as before quotas existed: it cannot be
    queued either, and the answer tells the client to resume it later, which takes a job slot then."""
    try:
        reserve_job(rt.redis, tenant, job_id, spec.num_scenes, job_bytes_estimate(spec.num_scenes, spec.image_size),
                    Limits.from_settings(rt.settings))
    except redis.ConnectionError as e:
        log.warning("job %s saved without a quota reservation: the broker is unavailable (%s)", job_id, e)


def give_back_new_job(rt, tenant: str, job_id: str, spec) -> None:
    """The job could not be written after its reservation: give back the slot, the scenes and the bytes."""
    try:
        release_job(rt.redis, tenant, job_id)
        set_usage(rt.redis, tenant, job_id, None)
        rt.redis.decrby(scenes_key(tenant, utc_day()), spec.num_scenes)
    except Exception:  # noqa: BLE001 - Redis away too: the supervisor's recount corrects it
        log.warning("could not give back the quota reservation of job %s", job_id)
