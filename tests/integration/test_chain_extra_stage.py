"""Adding a stage is a declaration plus its work: a test-only stage inserted after curation runs for every
scene, is counted, resumes from storage, and the finisher waits for it."""

from __future__ import annotations

import json

from dreammask.services.cli.inprocess import in_process_dispatcher, run_pending
from dreammask.shared import keys
from dreammask.shared import orchestration as orch
from dreammask.shared.chain import DEFAULT_CHAIN, StageDef
from dreammask.shared.runtime import build_runtime, set_runtime
from dreammask.shared.schemas import JobSpec, JobState
from dreammask.shared.settings import Settings
from dreammask.shared.skeleton import SceneResult, run_scene_stage


def stamp_key(job_id: str, sid: str) -> str:
    return keys.job_prefix(job_id) + f"stamps/{sid}.json"


STAMP = StageDef("stamp", "dreammask.curation.stamp", "scene", stamp_key, batch_size="annotation_batch_size")


def stamp_work(rt, job_id: str, todo: list[str]) -> SceneResult:
    result = SceneResult()
    for sid in todo:
        rec = json.loads(rt.store.get_bytes(keys.curated(job_id, sid)))
        rt.store.put_json(stamp_key(job_id, sid), {
            "scene_id": sid, "kept": rec["kept"],
            "dataset_existed": rt.store.exists(keys.dataset_manifest_for_job(job_id)),
        })
        result.done.append(sid)
    return result


def stamp(rt, job_id: str, scene_ids: list[str]) -> dict:
    return run_scene_stage(rt, "stamp", job_id, scene_ids, stamp_work)


def test_a_job_runs_through_a_declared_extra_stage_and_resumes_it(tmp_path, redis_client, redis_url, shared_cache_dir):
    chain = DEFAULT_CHAIN.with_stage(STAMP, after="curation")
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", cache_dir=shared_cache_dir,
                 synthesis_batch_size=2, annotation_batch_size=2, layout_batch_size=2)
    rt = build_runtime(s, dispatcher=in_process_dispatcher(chain, {"stamp": stamp}), chain=chain)
    set_runtime(rt)
    try:
        spec = JobSpec(train_categories=["person", "dog", "car", "building", "sky", "road"], num_novel=2,
                       images_per_category=2, image_size=96)
        job = rt.tracker.create(spec, "t", spec.train_categories).job_id
        orch.start(rt, job)
        run_pending(rt, until=STAMP.task)
        # Lose Redis with the first stamp message still queued: resume must find the stamps from storage.
        first = rt.dispatcher.pending.popleft()
        rt.dispatcher.handlers[first[0]](rt, *first[1])
        stamped = {sid for sid in map(keys.scene_id, range(4)) if rt.store.exists(stamp_key(job, sid))}
        assert len(stamped) == 2
        rt.dispatcher.pending.clear()
        rt.redis.flushdb()
        enqueued = orch.resume(rt, job)
        assert enqueued["stamp"] + enqueued["curation"] + enqueued["annotation"] == 2 and enqueued["layout"] == 0
        assert rt.tracker.counts(job, 4)["stamp"].done == 2
        run_pending(rt)

        st = rt.tracker.status(job)
        assert st.state == JobState.succeeded, st
        counts = rt.tracker.counts(job, 4)
        assert list(counts) == ["association", "layout", "synthesis", "annotation", "curation", "stamp", "assemble"]
        assert counts["stamp"].done == 4 and counts["assemble"].done == 1
        for i in range(4):
            rec = json.loads(rt.store.get_bytes(stamp_key(job, keys.scene_id(i))))
            assert rec["dataset_existed"] is False  # the finisher ran only after the last stamp
    finally:
        set_runtime(None)
