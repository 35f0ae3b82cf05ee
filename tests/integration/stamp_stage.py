"""A test-only stage's module: its output key and its work, nothing else. Declared by one `StageDef` in
test_chain_extra_stage.py; every other piece (Celery task, in-process runner, progress, resume, listings,
its seed) is derived from that declaration."""

from __future__ import annotations

import json

from dreammask.shared import keys
from dreammask.shared.skeleton import SceneResult


def stamp_key(job_id: str, sid: str) -> str:
    return keys.job_prefix(job_id) + f"stamps/{sid}.json"


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
