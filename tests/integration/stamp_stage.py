"""A test-only stage's module: its work, nothing else. Declared by one `StageDef` in
test_chain_extra_stage.py; every other piece (Celery task, in-process runner, progress, resume, listings,
its output key and seed) is derived from that declaration."""

from __future__ import annotations

from dreammask.shared import keys
from dreammask.shared.plan import scene_stage_seed
from dreammask.shared.schemas import CuratedScene
from dreammask.shared.skeleton import SceneResult


def stamp_work(rt, job_id: str, todo: list[str]) -> SceneResult:
    stage = rt.chain["stamp"]
    plan = rt.tracker.plan(job_id)
    result = SceneResult()
    for sid in todo:
        rec = rt.store.get_model(keys.curated(job_id, sid), CuratedScene)
        rt.store.put_json(stage.output(job_id, sid), {  # the stage's declared output, written last
            "scene_id": sid, "kept": rec.kept, "seed": scene_stage_seed(rt.chain, plan, sid, "stamp"),
            "dataset_existed": rt.store.exists(keys.dataset_manifest_for_job(job_id)),
        })
        result.done.append(sid)
    return result
