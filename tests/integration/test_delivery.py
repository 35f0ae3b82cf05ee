"""Delivery semantics with the real stage functions, storage and Redis: idempotency, cancel, resume after
losing Redis, failed scenes, reproducible renders."""

from __future__ import annotations

from dreammask.shared import keys
from dreammask.shared import orchestration as orch
from dreammask.shared.chain import DEFAULT_CHAIN
from dreammask.shared.schemas import JobState, SceneFailure
from dreammask.shared.skeleton import run_stage


def test_a_job_finishes_and_redelivered_tasks_change_nothing(inproc):
    rt = inproc.rt
    job = inproc.create()
    orch.start(rt, job)
    inproc.run()
    st = rt.tracker.status(job)
    assert st.state == JobState.succeeded and st.dataset_id == keys.dataset_id_for_job(job)
    image = rt.store.get_bytes(keys.image(job, "s00000"))
    counts = rt.tracker.counts(job, 4)
    # Redeliver every stage's message, as Redis would after a worker crash: outputs exist, so work is skipped.
    for name, args in [(DEFAULT_CHAIN["association"].task, (job,)), (DEFAULT_CHAIN["synthesis"].task, (job, ["s00000", "s00001"])),
                       (DEFAULT_CHAIN["annotation"].task, (job, ["s00000"])), (DEFAULT_CHAIN["curation"].task, (job, ["s00001"])),
                       (DEFAULT_CHAIN["assemble"].task, (job,))]:
        rt.dispatcher.send(name, *args)
    inproc.run()
    assert rt.store.get_bytes(keys.image(job, "s00000")) == image
    assert rt.tracker.counts(job, 4) == counts
    assert rt.tracker.status(job).state == JobState.succeeded


def test_cancel_stops_new_work(inproc):
    rt = inproc.rt
    job = inproc.create()
    orch.start(rt, job)
    inproc.run(until=DEFAULT_CHAIN["synthesis"].task)
    rt.tracker.cancel(job)
    inproc.run()
    assert list(rt.store.list(keys.job_prefix(job) + "images/")) == []
    assert rt.tracker.status(job).state == JobState.cancelled
    assert not rt.store.exists(keys.dataset_manifest(keys.dataset_id_for_job(job)))


def test_resume_after_losing_redis_finishes_the_job(inproc):
    rt = inproc.rt
    job = inproc.create()
    orch.start(rt, job)
    inproc.run(until=DEFAULT_CHAIN["annotation"].task)  # layouts and the first renders are done
    rt.dispatcher.pending.clear()  # the queued messages are lost with Redis ...
    rt.redis.flushdb()  # ... and so are the counters
    enqueued = orch.resume(rt, job)
    assert enqueued["layout"] == 0 and enqueued["synthesis"] + enqueued["annotation"] >= 1
    assert rt.tracker.counts(job, 4)["layout"].done == 4  # rebuilt from storage
    inproc.run()
    st = rt.tracker.status(job)
    assert st.state == JobState.succeeded, st
    assert rt.tracker.counts(job, 4)["annotation"].done == 4


def test_a_corrupt_image_fails_its_scene_with_a_reason_and_the_job_goes_on(inproc):
    rt = inproc.rt
    job = inproc.create()
    orch.start(rt, job)
    inproc.run(until=DEFAULT_CHAIN["annotation"].task)
    # Finish all renders first, then corrupt one image.
    while rt.dispatcher.pending and any(n == DEFAULT_CHAIN["synthesis"].task for n, _ in rt.dispatcher.pending):
        name, args = rt.dispatcher.pending.popleft()
        if name == DEFAULT_CHAIN["synthesis"].task:
            rt.dispatcher.handlers[name](rt, *args)
        else:
            rt.dispatcher.pending.append((name, args))
    rt.store.put_bytes(keys.image(job, "s00001"), b"this is not a png")
    inproc.run()
    failure = rt.store.get_model(keys.failure(job, "s00001"), SceneFailure)
    assert failure.stage == "annotation" and "corrupt image" in failure.reason
    st = rt.tracker.status(job)
    assert st.state == JobState.succeeded and "1 scenes failed" in st.transitions[-1].reason
    assert rt.tracker.counts(job, 4)["annotation"].failed == 1


def test_a_job_whose_scenes_all_fail_fails_with_the_reason(inproc):
    rt = inproc.rt
    job = inproc.create()
    orch.start(rt, job)
    inproc.run(until=DEFAULT_CHAIN["annotation"].task)
    while rt.dispatcher.pending:
        name, args = rt.dispatcher.pending.popleft()
        if name == DEFAULT_CHAIN["synthesis"].task:
            rt.dispatcher.handlers[name](rt, *args)
        elif name == DEFAULT_CHAIN["annotation"].task:
            rt.dispatcher.pending.append((name, args))
            break
    for sid in [keys.scene_id(i) for i in range(4)]:
        rt.store.put_bytes(keys.image(job, sid), b"garbage")
    inproc.run()
    st = rt.tracker.status(job)
    assert st.state == JobState.failed and "all scenes failed" in st.error and "corrupt image" in st.error


def test_scene_renders_identically_in_any_batch(inproc):
    rt = inproc.rt
    job = inproc.create()
    orch.start(rt, job)
    inproc.run(until=DEFAULT_CHAIN["synthesis"].task)
    rt.dispatcher.pending.clear()

    run_stage(rt, "synthesis", job, ["s00000", "s00001", "s00002"])
    together = rt.store.get_bytes(keys.image(job, "s00002"))
    rt.store.delete(keys.image(job, "s00002"))
    run_stage(rt, "synthesis", job, ["s00002"])
    assert rt.store.get_bytes(keys.image(job, "s00002")) == together


def test_a_layout_that_breaks_its_schema_fails_its_scene_where_it_is_read(inproc):
    """Layouts are validated once, by their schema when read; the renderer trusts what it is given. A layout
    written around the schema (a box outside [0, 1]) fails its own scene with the reason, the rest go on."""
    rt = inproc.rt
    job = inproc.create()
    orch.start(rt, job)
    inproc.run(until=DEFAULT_CHAIN["synthesis"].task)
    bad = rt.store.get_json(keys.layout(job, "s00001"))
    bad["objects"][0]["box"] = [0.2, 0.2, 1.5, 0.4]
    rt.store.put_json(keys.layout(job, "s00001"), bad)
    inproc.run()
    failure = rt.store.get_model(keys.failure(job, "s00001"), SceneFailure)
    assert failure.stage == "synthesis" and "layout unreadable" in failure.reason and "outside [0, 1]" in failure.reason
    st = rt.tracker.status(job)
    assert st.state == JobState.succeeded and rt.tracker.counts(job, 4)["synthesis"].done == 3
