"""The supervisor against real Redis and a local store: it heals stalled jobs from storage, leaves jobs with
work in flight alone, records what it did, gives up with a reason, and runs as one instance at a time."""

from __future__ import annotations

import base64
import json

import pytest

from dreammask.shared import keys
from dreammask.shared.celery_app import QUEUES
from dreammask.shared.chain import DEFAULT_CHAIN
from dreammask.shared.plan import write_plan
from dreammask.shared.runtime import build_runtime
from dreammask.shared.schemas import CategorySet, JobSpec, JobState, NovelCategory
from dreammask.shared.settings import Settings
from dreammask.shared.storage import LocalObjectStore, StorageError
from dreammask.shared.supervisor import Supervisor, _job_of_message


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


class SwitchableStore(LocalObjectStore):
    """A local store whose writes can be refused, as an S3 endpoint that is down refuses them."""

    down = False

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        if self.down:
            raise StorageError("object storage unreachable: connection refused")
        super().put_bytes(key, data, content_type)


@pytest.fixture()
def rt(tmp_path, redis_url, redis_client):
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects")
    return build_runtime(s, store=SwitchableStore(tmp_path / "objects"))


def _job(rt, scenes_done: dict[str, int], n_novel=2, per_category=4) -> str:
    """A job whose association ran and whose stages produced outputs for the first scenes of each stage."""
    spec = JobSpec(train_categories=["dog", "car"], num_novel=n_novel, images_per_category=per_category)
    stored = rt.tracker.create(spec, "t", ["dog", "car"])
    job_id = stored.job_id
    cats = CategorySet(job_id=job_id, backend="embedding", train=["dog", "car"],
                       novel=[NovelCategory(name=f"novel{i}", nearest_train="dog", score=0.5) for i in range(n_novel)])
    rt.store.put_json(keys.categories(job_id), cats)
    write_plan(rt.store, stored, cats)
    rt.tracker.transition(job_id, JobState.running, planned_scenes=n_novel * per_category)
    for stage, n in scenes_done.items():
        for i in range(n):
            rt.store.put_bytes(rt.chain[stage].output(job_id, keys.scene_id(i)), b"{}")
    return job_id


def _queued(rt) -> dict[str, list]:
    out = {}
    for q in QUEUES:
        for raw in rt.redis.lrange(q, 0, -1):
            msg = json.loads(raw)
            args = json.loads(base64.b64decode(msg["body"]))[0]
            out.setdefault(q, []).append(args)
    return out


def test_a_job_stalled_by_a_redis_loss_is_healed_from_storage(rt):
    job_id = _job(rt, {"layout": 8, "synthesis": 5, "annotation": 3})
    rt.redis.flushdb()  # the counters, the queues and the supervisor's own state are gone
    clock = Clock()
    sup = Supervisor(rt, stall_after_s=60, clock=clock)
    first = sup.sweep()
    assert first.watched == 1 and not first.healed  # found by scanning storage; the clock starts
    clock.t += 30
    assert not sup.sweep().healed  # not stalled long enough
    clock.t += 31
    healed = sup.sweep().healed
    assert job_id in healed
    counts = rt.tracker.counts(job_id, 8)
    assert (counts["layout"].done, counts["synthesis"].done, counts["annotation"].done) == (8, 5, 3)
    queued = _queued(rt)
    rendered = [s for args in queued.get("synthesis", []) for s in args[1]]
    annotated = [s for args in queued.get("annotation", []) for s in args[1]]
    assert sorted(rendered) == [keys.scene_id(i) for i in range(5, 8)]
    assert sorted(annotated) == [keys.scene_id(i) for i in range(3, 5)]
    assert "layout" not in queued and all(args[0] == job_id for q in queued.values() for args in q)
    last = rt.tracker.status(job_id).transitions[-1]
    assert last.reason.startswith("supervisor: no progress for 61 s") and last.state == JobState.running


def test_work_in_flight_is_not_a_stall(rt):
    job_id = _job(rt, {"layout": 8})

    rt.dispatcher.send(DEFAULT_CHAIN["synthesis"].task, job_id, [keys.scene_id(0)])
    assert _job_of_message(rt.redis.lrange("synthesis", 0, 0)[0]) == job_id
    clock = Clock()
    sup = Supervisor(rt, stall_after_s=10, clock=clock)
    sup.sweep()
    clock.t += 1000
    assert not sup.sweep().healed


def test_after_fruitless_heals_the_missing_scenes_fail_with_the_last_fault(rt):
    job_id = _job(rt, {"layout": 8, "synthesis": 8, "annotation": 6, "curation": 6})
    rt.tracker.note_transient(job_id, "annotation", "annotation failed: StorageError: connection refused")
    clock = Clock()
    sup = Supervisor(rt, stall_after_s=10, max_heals=1, clock=clock)
    sup.sweep()
    clock.t += 11
    assert job_id in sup.sweep().healed
    for q in QUEUES:  # the re-enqueued tasks ran out of retries again
        rt.redis.delete(q)
    clock.t += 11
    result = sup.sweep()
    assert result.gave_up == {job_id: 2}
    failures = {f.scene_id: f for f in rt.tracker.failures(job_id)}
    assert sorted(failures) == [keys.scene_id(6), keys.scene_id(7)]
    assert "connection refused" in failures[keys.scene_id(6)].reason
    assert _queued(rt)["curation"] == [[job_id]]  # every scene is finished: curation ends the job


def test_failures_are_kept_in_redis_while_storage_is_down_and_written_later(rt):
    job_id = _job(rt, {"layout": 8, "synthesis": 8, "annotation": 7})
    rt.store.down = True
    rt.tracker.mark_failed(job_id, "annotation", keys.scene_id(7), "annotation failed: corrupt image")
    assert rt.tracker.failures(job_id) == []
    assert rt.tracker.counts(job_id, 8)["annotation"].failed == 1  # counted at once
    rt.store.down = False
    sup = Supervisor(rt, stall_after_s=10, clock=Clock())
    sup.sweep()
    sup.clock.t += 11
    sup.sweep()  # the heal writes pending failures before rebuilding the counters from storage
    assert [f.scene_id for f in rt.tracker.failures(job_id)] == [keys.scene_id(7)]
    assert rt.tracker.counts(job_id, 8)["annotation"].failed == 1


def test_split_done_counts_outputs_found_on_redelivery(rt):
    job_id = _job(rt, {"layout": 8, "synthesis": 8, "annotation": 8})
    rt.tracker.clear_counters(job_id)
    todo, done = rt.tracker.split_done(job_id, "annotation", [keys.scene_id(i) for i in range(8)])
    assert todo == [] and len(done) == 8
    assert rt.tracker.counts(job_id, 8)["annotation"].done == 8


def test_one_supervisor_sweeps_at_a_time(rt):
    a, b = Supervisor(rt, lock_ttl_s=30), Supervisor(rt, lock_ttl_s=30)
    assert a.sweep().skipped is None
    assert b.sweep().skipped == "another supervisor holds the lock"
    assert a.sweep().skipped is None  # renewing its own lock
    a.release_lock()
    assert b.sweep().skipped is None


def test_finished_jobs_leave_the_watch_list(rt):
    job_id = _job(rt, {"layout": 8})
    assert job_id in rt.tracker.active_jobs()
    rt.tracker.cancel(job_id)
    assert job_id not in rt.tracker.active_jobs()


def test_a_sweep_does_the_housekeeping(rt, redis_client):
    """Each sweep also finishes deletions (removing what landed after them), measures the stored bytes of
    finished jobs for the quotas, applies retention once per interval, and recounts the quota counters
    when Redis lost them."""
    from datetime import timedelta

    from dreammask.shared import deletion, quotas
    from dreammask.shared.schemas import JobStatus, utcnow

    kept = _job(rt, {"layout": 2})
    gone = _job(rt, {"layout": 2})
    old = _job(rt, {})
    rt.tracker.transition(kept, JobState.cancelled, "by the client")
    rt.tracker.transition(old, JobState.failed, "broken")
    st = rt.store.get_model(keys.status(old), JobStatus)
    st.updated_at = utcnow() - timedelta(days=rt.settings.retention_failed_jobs_days + 1)
    rt.store.put_json(keys.status(old), st)
    deletion.delete_job(rt, gone)
    rt.store.put_bytes(keys.layout(gone, "s00003"), b"{}")  # landed after the deletion
    sup = Supervisor(rt, clock=Clock())
    out = sup.sweep()
    assert out.landed_after_deletion == {f"job|{gone}": 1}
    assert not any(gone in k for k in rt.store.list(""))
    assert out.retention == {"jobs": [old], "versions": []} and not rt.store.exists(keys.spec(old))
    assert out.measured >= 1
    assert quotas.usage(redis_client, "t")[kept] == quotas.measure_job(rt.store, kept) > 0
    # Redis lost the quota counters: the next sweep counts them again from storage.
    redis_client.delete(quotas.bytes_key("t"), quotas.COUNTED_KEY)
    sup.sweep()
    assert quotas.stored_bytes(redis_client, "t") == quotas.measure_job(rt.store, kept)


def test_every_unfinished_loop_gets_one_advance_per_sweep(rt):
    from dreammask.shared import loops as lp

    spec = lp.LoopSpec(train_categories=["sky"], target=["kite"], rounds=1, images_per_round=2,
                       real_datasets=["toy_world_train"], eval_dataset="toy_world_val", training={"iterations": 1})
    running = lp.create_loop(rt.store, rt.redis, "t", spec, ["sky"]).loop_id
    done = lp.create_loop(rt.store, rt.redis, "t", spec, ["sky"])
    lp.transition(rt.store, done, lp.LoopState.succeeded, "done")
    rt.redis.delete(lp.ACTIVE_KEY, lp.SCANNED_KEY)  # Redis lost the set: rebuilt from a scan of storage
    sup = Supervisor(rt, clock=Clock())
    assert sup.sweep().loops_advanced == 1
    assert _queued(rt)["loop"] == [[running]]
    # Its message is still queued: the next sweep sends no second one.
    assert sup.sweep().loops_advanced == 0 and len(_queued(rt)["loop"]) == 1
