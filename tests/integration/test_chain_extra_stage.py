"""Adding a stage is one `StageDef` plus one module with its work (stamp_stage.py), nothing else: the stage
gets its Celery task on its service's worker, runs in the in-process runner, writes its declared output key,
draws from its own seed, is counted, listed by the API per scene, resumes from storage, and the finisher
waits for it."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.services.cli.inprocess import in_process_dispatcher, run_pending
from dreammask.shared import keys
from dreammask.shared import orchestration as orch
from dreammask.shared.celery_app import queue_of
from dreammask.shared.chain import DEFAULT_CHAIN, StageDef
from dreammask.shared.plan import scene_stage_seed
from dreammask.shared.runtime import build_runtime, set_runtime
from dreammask.shared.schemas import JobSpec, JobState
from dreammask.shared.settings import Settings
from dreammask.shared.worker import create_worker_app

STAMP = StageDef("stamp", "curation", "stamp", "scene", "stamp_stage:stamp_work", "stamps/{scene}.json",
                 batch_size="annotation_batch_size", seed_salt=7, description="a test-only stage after curation")
stamp_key = STAMP.output


def test_a_job_runs_through_a_declared_extra_stage_and_resumes_it(tmp_path, redis_client, redis_url, shared_cache_dir):
    chain = DEFAULT_CHAIN.with_stage(STAMP, after="curation")
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", cache_dir=shared_cache_dir,
                 synthesis_batch_size=2, annotation_batch_size=2, layout_batch_size=2, api_keys={"k": "t"})
    rt = build_runtime(s, dispatcher=in_process_dispatcher(chain), chain=chain)
    set_runtime(rt)
    try:
        # Routed to its service's queue, with a task on that service's worker (and only there).
        assert queue_of(STAMP.task) == "curation"
        assert STAMP.task in create_worker_app("curation", chain).tasks
        assert STAMP.task not in create_worker_app("annotation", chain).tasks

        spec = JobSpec(train_categories=["person", "dog", "car", "building", "sky", "road"], num_novel=2,
                       images_per_category=2, image_size=96)
        job = rt.tracker.create(spec, "t", spec.train_categories).job_id
        orch.start(rt, job)
        run_pending(rt, until=STAMP.task)
        # The first stamp message runs as the curation worker's Celery task would (eagerly, same runtime).
        name, args = rt.dispatcher.pending.popleft()
        assert name == STAMP.task
        out = create_worker_app("curation", chain).tasks[STAMP.task].apply(args=list(args)).get()
        assert out["done"] == 2
        stamped = {sid for sid in map(keys.scene_id, range(4)) if rt.store.exists(stamp_key(job, sid))}
        assert stamped == set(args[1])
        with TestClient(create_app(s, rt), base_url="http://127.0.0.1") as api:
            page = api.get(f"/v1/jobs/{job}/scenes", headers={"Authorization": "Bearer k"}).json()
        assert [list(item["stages"]) for item in page["items"]] == [
            ["layout", "synthesis", "annotation", "curation", "stamp"]] * 4
        assert sorted(i["scene_id"] for i in page["items"] if i["stages"]["stamp"] == "done") == sorted(stamped)

        # Lose Redis with the other stamp message still queued: resume must find the stamps from storage.
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
        plan = rt.tracker.plan(job)
        for sid in plan.scene_ids:
            rec = json.loads(rt.store.get_bytes(stamp_key(job, sid)))
            assert rec["dataset_existed"] is False  # the finisher ran only after the last stamp
            # Its own random stream, from the declared salt: not the layout's or the renderer's.
            assert rec["seed"] == scene_stage_seed(chain, plan, sid, "stamp")
            assert rec["seed"] not in {scene_stage_seed(chain, plan, sid, s) for s in ("layout", "synthesis")}
    finally:
        set_runtime(None)
