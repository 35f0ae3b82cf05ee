"""Jobs naming the `sam` and `clip` backends through real worker processes, Redis queues and storage,
with the tiny models loaded from a models directory by the workers themselves."""

from __future__ import annotations

import json
import time

import pytest

from dreammask.services.cli.harness import LocalPlatform
from dreammask.shared import keys
from dreammask.shared.schemas import SceneAnnotation

pytestmark = pytest.mark.integration

DEPLOYED = {
    "association": ["embedding"], "layout": ["prior"], "synthesis": ["preview"],
    "masks": ["grabcut", "sam"], "scores": ["geometric", "clip"],
}
JOB = {
    "train_categories": ["person", "car", "tree", "building", "road", "bench"],
    "num_novel": 2,
    "images_per_category": 2,
    "image_size": 128,
    "seed": 3,
    "backends": {"masks": "sam", "scores": "clip"},
    # random tiny models score at chance: keep every instance whose mask is non-trivial in size
    "thresholds": {"min_score": 0.0, "min_kept_fraction": 0.0, "min_area_frac": 0.0, "max_area_frac": 1.0},
}


@pytest.fixture
def worker_env(tiny_annotation_env):
    return {
        **tiny_annotation_env,
        "DREAMMASK_DEPLOYED_BACKENDS": json.dumps(DEPLOYED),
        "DREAMMASK_PRELOAD_BACKENDS": json.dumps(["masks:sam", "scores:clip"]),
    }


def _annotations(store, job_id):
    return [store.get_model(k, SceneAnnotation) for k in store.list(keys.job_prefix(job_id) + "annotations/")]


def test_sam_and_clip_job_annotates_and_curates(platform, worker_env):
    p = platform(env=worker_env)
    job_id = p.submit(JOB)
    view = p.wait(job_id, timeout=300)
    assert view["state"] == "succeeded", (view, p.tail_logs())
    assert view["stages"]["annotation"]["done"] == 4 and view["stages"]["annotation"]["failed"] == 0

    anns = _annotations(p.store, job_id)
    assert len(anns) == 4
    for ann in anns:
        assert (ann.mask_backend, ann.score_backend) == ("sam", "clip")
        assert (ann.width, ann.height) == (128, 128)
        for inst in ann.instances:
            assert {"pred_iou", "stability", "clip_cosine", "clip_prob", "clip_rank"} <= set(inst.scores)
            assert 1 <= inst.scores["clip_rank"] and 0.0 <= inst.scores["clip_prob"] <= 1.0
            assert inst.mask.size == [128, 128]

    # curation read the CLIP probability and recorded a decision for every instance
    ds = view["dataset_id"]
    decisions = p.store.get_json(keys.dataset_file(ds, keys.DECISIONS))
    assert decisions["thresholds"]["min_score"] == 0.0
    assert len(decisions["scenes"]) == 4
    assert sum(len(s["instances"]) for s in decisions["scenes"]) == sum(len(a.instances) for a in anns)
    manifest = p.client.get(f"/v1/datasets/{ds}").json()["manifest"]
    sel = manifest["selection"]
    assert sel["scenes"] == 4 and sel["instances"] == sum(len(a.instances) for a in anns)
    assert sel["kept_scenes"] + sum(sel["dropped_scenes_by_reason"].values()) == 4


def test_two_tasks_in_flight_on_the_threads_pool(platform, worker_env, monkeypatch):
    """The GPU annotation worker's way (docs/annotation.md, "Tasks in flight"): one process on Celery's
    threads pool with two tasks in flight, SAM and CLIP loaded once and shared by both threads. One scene
    per task, so the job's four scenes are four tasks; each scene's annotation is the one the pipeline
    gives that scene alone."""
    from dreammask.services.annotation.backends.clip import ClipScores
    from dreammask.services.annotation.backends.sam import SamMasks
    from dreammask.services.annotation.pipeline import AnnotationPipeline
    from dreammask.shared.masks import load_rgb
    from dreammask.shared.schemas import CategorySet, SceneLayout
    from dreammask.shared.settings import Settings

    env = {**worker_env, "DREAMMASK_ANNOTATION_BATCH_SIZE": "1"}
    p = platform(env=env, pools={"annotation": ("threads", 2)})
    job_id = p.submit(JOB)
    view = p.wait(job_id, timeout=300)
    assert view["state"] == "succeeded", (view, p.tail_logs())
    assert view["stages"]["annotation"]["done"] == 4 and view["stages"]["annotation"]["failed"] == 0
    # Celery's banner: the worker ran as asked, one process with two threads
    assert "concurrency: 2 (thread)" in (p.logs / "annotation.log").read_text(errors="replace")

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    sam, clip = SamMasks.from_settings(Settings()), ClipScores.from_settings(Settings())
    try:
        vocabulary = p.store.get_model(keys.categories(job_id), CategorySet).vocabulary
        anns = _annotations(p.store, job_id)
        assert len(anns) == 4
        for ann in anns:
            layout = p.store.get_model(keys.layout(job_id, ann.scene_id), SceneLayout)
            image = load_rgb(p.store.get_bytes(keys.image(job_id, ann.scene_id)))
            alone = AnnotationPipeline(sam, clip).annotate_many([image], [layout], vocabulary)[0]
            assert len(alone) == len(ann.instances) > 0
            for want, got in zip(alone, ann.instances, strict=True):
                assert (got.mask, got.area, got.bbox, got.category) == (want.mask, want.area, want.bbox, want.category)
                assert got.scores == pytest.approx(want.scores, abs=1e-5)
    finally:
        sam.close()
        clip.close()


def test_corrupt_or_missing_images_fail_their_scene_with_a_reason(platform, worker_env):
    # 1. association and synthesis only: the annotation messages wait in Redis
    first = platform(env=worker_env, services=("association", "synthesis"))
    job_id = first.submit(JOB)
    deadline = time.monotonic() + 240
    while first.job(job_id)["stages"].get("synthesis", {}).get("done", 0) < 4:
        assert time.monotonic() < deadline, first.tail_logs()
        time.sleep(0.5)
    root, redis_url = first.root, first.redis_url
    first.stop()

    # 2. break two inputs: one image is not an image any more, another is gone
    store = first.store
    store.put_bytes(keys.image(job_id, keys.scene_id(0)), b"\x89PNG\r\n\x1a\n this is not a PNG", "image/png")
    store.delete(keys.image(job_id, keys.scene_id(1)))

    # 3. annotation and curation workers (SAM + CLIP from disk) take the queued work
    with LocalPlatform(root, services=("annotation", "curation"), env=worker_env, redis_url=redis_url) as second:
        view = second.wait(job_id, timeout=300)
    assert view["state"] == "succeeded", view
    assert view["stages"]["annotation"]["done"] == 2 and view["stages"]["annotation"]["failed"] == 2
    reasons = {e["scene_id"]: e["reason"] for e in view["errors"]}
    assert reasons[keys.scene_id(0)].startswith("corrupt image")
    assert reasons[keys.scene_id(1)].startswith("input missing")
    assert len(_annotations(store, job_id)) == 2
