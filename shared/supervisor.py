"""The supervisor: heals jobs that stopped progressing, from the durable record, with no person involved.

Every `supervisor_interval_s` it looks at each unfinished job, and sends every unfinished closed loop
(shared/loops.py) a `dreammask.loop.advance` message, unless one is already queued: a loop waits for its jobs
and trainings by being looked at again, never by a sleeping thread. A job's progress is a signature of what
it has produced (its Redis counters and the state in storage); a job whose signature has not changed for
`stall_after_s` while no message of it is queued or running under a live lease is stalled: lost worker,
lost Redis data, or tasks that ran out of retries during an outage. Healing writes failures kept in Redis
into storage, rebuilds the counters from storage and re-enqueues exactly the missing work (stages skip
work whose output exists), and records the intervention in the job's transitions. After
`supervisor_max_heals` heals without progress, the scenes still missing are marked failed with the last
fault seen, and the job finishes.

One instance is enough and two are safe: a Redis lock with a TTL (renewed every sweep) lets one sweep at a
time; a second instance takes over when the first stops renewing. Everything the supervisor keeps is in
Redis and is rebuilt from storage if Redis is lost (the set of unfinished jobs by a scan of storage).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from dataclasses import dataclass, field

import redis

from . import deletion, loops, quotas
from . import orchestration as orch
from .celery_app import QUEUES, TASK_LOOP_ADVANCE
from .jobs import SUPERVISOR_STATE_KEY as STATE_KEY
from .lease import UNACKED_INDEX
from .runtime import Runtime
from .schemas import JobState
from .skeleton import trigger_finisher
from .storage import StorageError

log = logging.getLogger("dreammask.supervisor")

LOCK_KEY = "dreammask:supervisor:lock"
SCANNED_KEY = "dreammask:supervisor:scanned"  # present while Redis still holds the active-job set


@dataclass
class Sweep:
    watched: int = 0
    healed: dict[str, str] = field(default_factory=dict)
    gave_up: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None
    # Housekeeping (shared/deletion.py, shared/quotas.py): objects removed after their deletion, stored
    # bytes measured, what retention deleted.
    landed_after_deletion: dict[str, int] = field(default_factory=dict)
    measured: int = 0
    retention: dict[str, list[str]] = field(default_factory=dict)
    loops_advanced: int = 0


class Supervisor:
    def __init__(self, rt: Runtime, *, stall_after_s: float | None = None, max_heals: int | None = None,
                 lock_ttl_s: int | None = None, clock=time.time):
        s = rt.settings
        self.rt = rt
        self.r: redis.Redis = rt.redis
        self.stall_after_s = stall_after_s if stall_after_s is not None else s.stall_after_s
        self.max_heals = max_heals if max_heals is not None else s.supervisor_max_heals
        self.lock_ttl_s = lock_ttl_s if lock_ttl_s is not None else s.supervisor_lock_ttl_s
        self.visibility_timeout_s = s.visibility_timeout_s
        self.token = secrets.token_hex(8)
        self.clock = clock

    # ------------------------------------------------------------ one instance at a time
    def hold_lock(self) -> bool:
        """Take or renew the lock; False while another instance holds it."""
        if self.r.set(LOCK_KEY, self.token, nx=True, ex=self.lock_ttl_s):
            return True
        # Renew only our own lock, atomically.
        renewed = self.r.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) "
            "else return 0 end", 1, LOCK_KEY, self.token, self.lock_ttl_s)
        return bool(renewed)

    def release_lock(self) -> None:
        self.r.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
                    "else return 0 end", 1, LOCK_KEY, self.token)

    # ------------------------------------------------------------ what is outstanding
    def _jobs(self) -> list[str]:
        tr = self.rt.tracker
        if not self.r.exists(SCANNED_KEY):
            # Redis lost its data (or this is the first run): find the unfinished jobs in storage.
            for job_id in tr.all_job_ids():
                try:
                    if not tr.status(job_id).state.terminal:
                        tr.watch(job_id)
                except LookupError:
                    continue
            # Scanned again every 10 minutes too: a job created while Redis was unreachable is found.
            self.r.set(SCANNED_KEY, 1, ex=600)
        return tr.active_jobs()

    def _in_flight(self) -> dict[str, int]:
        """Messages per job that are queued, or delivered under a lease renewed within the visibility
        timeout (a task that is really running)."""
        counts: dict[str, int] = {}

        def count(raw) -> None:
            job = _job_of_message(raw)
            if job:
                counts[job] = counts.get(job, 0) + 1

        for q in QUEUES:
            for raw in self.r.lrange(q, 0, -1):
                count(raw)
        fresh = self.r.zrangebyscore(UNACKED_INDEX, self.clock() - self.visibility_timeout_s, "+inf")
        if fresh:
            for raw in self.r.hmget("unacked", fresh):
                if raw:
                    try:
                        count(json.loads(raw)[0])
                    except (ValueError, IndexError, TypeError, KeyError):
                        continue
        return counts

    def _signature(self, job_id: str, state: JobState) -> str:
        tr = self.rt.tracker
        pipe = self.r.pipeline()
        for stage in self.rt.chain.scene_stages:
            pipe.scard(tr._k(job_id, "done", stage.name))
            pipe.scard(tr._k(job_id, "failed", stage.name))
        pipe.scard(tr._k(job_id, "finished"))
        return f"{state.value}:{':'.join(str(n) for n in pipe.execute())}"

    # ------------------------------------------------------------ the sweep
    def sweep(self) -> Sweep:
        out = Sweep()
        if not self.hold_lock():
            out.skipped = "another supervisor holds the lock"
            return out
        try:
            jobs = self._jobs()
            in_flight = self._in_flight()
        except StorageError as e:
            out.skipped = f"storage unavailable: {e}"
            return out
        now = self.clock()
        out.watched = len(jobs)
        for job_id in jobs:
            try:
                self._check(job_id, now, in_flight.get(job_id, 0), out)
            except StorageError as e:
                log.warning("job %s: storage unavailable, checked next time: %s", job_id, e)
            except LookupError:
                self.r.srem(self.rt.tracker.active_key, job_id)
        try:
            out.loops_advanced = self._tick_loops(in_flight)
        except StorageError as e:
            log.warning("loops: storage unavailable, ticked next time: %s", e)
        self._housekeeping(out)
        return out

    def _tick_loops(self, in_flight: dict[str, int]) -> int:
        """One advance message per unfinished loop that has none queued or running (messages carry the loop id
        first, as jobs' carry the job id, so `_in_flight` counts them too)."""
        n = 0
        for loop_id in loops.active_loops(self.rt.store, self.r):
            if in_flight.get(loop_id):
                continue
            self.rt.dispatcher.send(TASK_LOOP_ADVANCE, loop_id)
            n += 1
        return n

    def _housekeeping(self, out: Sweep) -> None:
        """Deletions finished (and what landed after them removed), stored bytes measured, retention
        applied, quota counters rebuilt after Redis lost them. One failing part never stops the others
        nor the healing."""
        now = time.time()
        stale = _trainer_stale_after_s()
        parts = (
            ("deletions", lambda: out.landed_after_deletion.update(deletion.sweep_deletions(self.rt, now, stale))),
            ("quota recount", lambda: None if quotas.counted(self.r) else quotas.recount(self.rt)),
            ("measure", lambda: setattr(out, "measured", deletion.measure_due(self.rt, now))),
            ("retention", lambda: out.retention.update(deletion.apply_retention(self.rt, now))),
        )
        for name, fn in parts:
            try:
                fn()
            except (redis.RedisError, StorageError) as e:
                log.warning("%s skipped, a store is unavailable: %s", name, e)
            except Exception:  # noqa: BLE001 - housekeeping must not stop the supervisor
                log.exception("%s failed", name)

    def _check(self, job_id: str, now: float, in_flight: int, out: Sweep) -> None:
        tr = self.rt.tracker
        st = tr.status(job_id)
        if st.state.terminal:
            self.r.srem(tr.active_key, job_id)
            self.r.hdel(STATE_KEY, job_id)
            if st.state != JobState.cancelled:
                tr.flush_pending_failures(job_id)
            return
        sig = self._signature(job_id, st.state)
        raw = self.r.hget(STATE_KEY, job_id)
        seen = json.loads(raw) if raw else None
        if seen is None or seen["sig"] != sig:
            # Progress (or a first look): the clock and the count of fruitless heals start again.
            self.r.hset(STATE_KEY, job_id, json.dumps({"sig": sig, "since": now, "heals": 0}))
            return
        if in_flight or now - seen["since"] < self.stall_after_s:
            return
        idle = now - seen["since"]
        if seen["heals"] >= self.max_heals:
            n = self._give_up(job_id, seen["heals"])
            out.gave_up[job_id] = n
            return
        summary = orch.resume(self.rt, job_id, retry_failed=False,
                              reason=f"supervisor: no progress for {idle:.0f} s with work outstanding; "
                                     f"counters rebuilt from storage, re-enqueued the missing work")
        sig = self._signature(job_id, tr.status(job_id).state)
        self.r.hset(STATE_KEY, job_id, json.dumps({"sig": sig, "since": self.clock(), "heals": seen["heals"] + 1}))
        out.healed[job_id] = ", ".join(f"{k} {v}" for k, v in summary.items())
        log.info("healed job %s after %.0f s without progress: %s", job_id, idle, out.healed[job_id])

    def _give_up(self, job_id: str, heals: int) -> int:
        """Mark the scenes that are still missing failed, with the last fault seen, so the job ends."""
        tr, chain = self.rt.tracker, self.rt.chain
        last = tr.last_transient(job_id)
        scene_ids = orch.job_scene_ids(self.rt, job_id)
        if scene_ids is None:  # the per-job set-up stage never finished
            first = chain.first.name
            tr.transition(job_id, JobState.failed, f"{first} made no progress after {heals} automatic retries; "
                                                   f"last error: {last.get(first, 'unknown')}")
            return 0
        missing = tr.rebuild_counters(job_id, scene_ids, drop_failures=False)
        unfinished = set(missing[chain.last_scene_stage.name])
        failed = 0
        for sid in scene_ids:
            if sid not in unfinished:
                continue
            stage = next(st.name for st in chain.scene_stages if sid in set(missing[st.name]))
            tr.mark_failed(job_id, stage, sid, f"{stage} made no progress after {heals} automatic retries; "
                                               f"last error: {last.get(stage, 'unknown')}")
            failed += 1
        tr.transition(job_id, JobState.running, f"supervisor: gave up on {failed} scenes after {heals} heals")
        self.r.hdel(STATE_KEY, job_id)
        trigger_finisher(self.rt, job_id)
        return failed

    def run_forever(self, interval_s: float, stop=None) -> None:
        log.info("supervisor %s: sweeping every %.0f s, healing after %.0f s without progress",
                 self.token, interval_s, self.stall_after_s)
        while stop is None or not stop.is_set():
            try:
                result = self.sweep()
                if result.healed or result.gave_up:
                    log.info("sweep: %s", result)
            except (redis.RedisError, StorageError) as e:
                log.warning("sweep skipped, a store is unavailable: %s", e)
            except Exception:  # noqa: BLE001 - the supervisor must outlive any one bad job record
                log.exception("sweep failed")
            if stop is not None:
                stop.wait(interval_s)
            else:
                time.sleep(interval_s)


def _trainer_stale_after_s() -> float:
    """When a training without a heartbeat counts as stopped (the trainer's setting, where installed)."""
    try:
        from dreammask.trainer.settings import TrainerSettings

        return float(TrainerSettings().trainer_stale_after_s)
    except Exception:  # noqa: BLE001 - no trainer code in this image: its default
        return 900.0


def _job_of_message(raw) -> str | None:
    """The job id of a queued kombu message (Celery protocol 2: body = [args, kwargs, embed])."""
    try:
        msg = raw if isinstance(raw, dict) else json.loads(raw)
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return args[0] if args and isinstance(args[0], str) else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def main() -> None:
    """`dreammask supervisor` / `python -m dreammask.shared.supervisor`: sweep until SIGTERM."""
    import signal
    import threading

    from .runtime import build_runtime
    from .settings import get_settings
    from .worker import heartbeat_file

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rt = build_runtime(settings)
    sup = Supervisor(rt)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    beat = heartbeat_file()

    class _Beating(threading.Event):
        # The health check reads the heartbeat file: written once per sweep.
        def wait(self, timeout=None):
            try:
                beat.write_text(str(time.time()))
            except OSError:
                pass
            return stop.wait(timeout)

        def is_set(self):
            return stop.is_set()

    try:
        sup.run_forever(settings.supervisor_interval_s, stop=_Beating())
    finally:
        try:
            sup.release_lock()
        except redis.RedisError:
            pass
        beat.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
