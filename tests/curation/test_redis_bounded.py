"""Redis stays bounded: a terminal job's counters leave Redis (their final values stay readable from
storage), counters of a job left mid-way expire, and resume rebuilds them from storage."""

from __future__ import annotations

from dreammask.shared import keys
from dreammask.shared import orchestration as orch
from dreammask.shared.chain import DEFAULT_CHAIN
from dreammask.shared.schemas import JobState


def job_keys(rt, job):
    return sorted(k.decode() for k in rt.redis.scan_iter(match=f"*{job}*"))


def test_a_finished_job_leaves_no_keys_and_keeps_its_counts(curation):
    rt = curation.rt
    job = curation.job(8)
    curation.run(until=DEFAULT_CHAIN["assemble"].task)
    live = rt.tracker.counts(job, 8)
    assert live["curation"].done == 8 and job_keys(rt, job)
    # Every counter written so far expires on its own if the job were abandoned here.
    assert all(0 < rt.redis.ttl(k) <= rt.settings.job_keys_ttl_s for k in job_keys(rt, job))
    curation.run()
    assert rt.tracker.status(job).state == JobState.succeeded
    assert job_keys(rt, job) == []
    after = rt.tracker.counts(job, 8)
    assert after["curation"] == live["curation"] and after["annotation"] == live["annotation"]
    assert after["assemble"].done == 1


def test_a_cancelled_job_keeps_only_its_cancel_flag_with_a_ttl(curation):
    rt = curation.rt
    job = curation.job(8)
    curation.run(until=DEFAULT_CHAIN["curation"].task)
    rt.tracker.cancel(job)
    assert job_keys(rt, job) == [f"dreammask:job:{job}:cancelled"]
    assert 0 < rt.redis.ttl(f"dreammask:job:{job}:cancelled") <= rt.settings.job_keys_ttl_s
    curation.run()  # the queued batches see the flag and do nothing
    assert not rt.store.exists(keys.curated(job, "s00000"))


def test_resume_rebuilds_the_dropped_counters_from_storage(curation):
    rt = curation.rt
    job = curation.job(8)
    first = rt.dispatcher.pending.popleft()
    rt.dispatcher.handlers[first[0]](rt, *first[1])
    rt.dispatcher.pending.clear()
    rt.tracker.transition(job, JobState.failed, "test: the job failed half-way")
    assert job_keys(rt, job) == []
    assert rt.tracker.counts(job, 8)["curation"].done == 4  # from progress.json
    enqueued = orch.resume(rt, job)
    assert enqueued["curation"] == 4 and rt.tracker.counts(job, 8)["curation"].done == 4  # rebuilt in Redis
    assert not rt.store.exists(keys.progress(job))
    curation.run()
    assert rt.tracker.status(job).state == JobState.succeeded
    assert rt.tracker.counts(job, 8)["curation"].done == 8 and job_keys(rt, job) == []
