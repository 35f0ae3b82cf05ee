"""Curation stage: select instances and images by score, export the dataset, finish the job."""

from __future__ import annotations

import time

from dreammask.shared import keys
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import (
    CategorySet,
    DatasetManifest,
    JobState,
    SceneAnnotation,
    SceneLayout,
    utcnow,
)

from .checksums import dataset_checksums
from .export import build_categories, export_dataset
from .selection import SelectionPolicy, summarise


def _thing_flags(preset: str | None) -> dict[str, bool] | None:
    if preset == "coco_panoptic":
        from dreammask.services.association.vocabulary import coco_panoptic

        names, things = coco_panoptic()
        return dict(zip(names, things))
    return None


def curate(rt: Runtime, job_id: str) -> dict:
    tr = rt.tracker
    if tr.is_cancelled(job_id):
        return {"skipped": "cancelled"}
    stored = tr.spec(job_id)
    spec = stored.spec
    dataset_id = keys.dataset_id_for_job(job_id)
    if rt.store.exists(keys.dataset_manifest(dataset_id)):
        tr.transition(job_id, JobState.succeeded, dataset_id=dataset_id)
        return {"dataset_id": dataset_id, "skipped": "exists"}

    t0 = time.perf_counter()
    ann_keys = list(rt.store.list(keys.job_prefix(job_id) + "annotations/"))
    if not ann_keys:
        failures = tr.failures(job_id, limit=3)
        detail = "; ".join(f"{f.scene_id}: {f.reason}" for f in failures) or "no scene produced an annotation"
        tr.transition(job_id, JobState.failed, f"all scenes failed ({detail})")
        return {"dataset_id": None}

    cats = rt.store.get_model(keys.categories(job_id), CategorySet)
    policy = SelectionPolicy(spec.thresholds)
    scenes = []
    for k in ann_keys:
        ann = rt.store.get_model(k, SceneAnnotation)
        layout = rt.store.try_get_model(keys.layout(job_id, ann.scene_id), SceneLayout)
        scenes.append((ann, layout, policy(ann)))
    decisions = [d for _, _, d in scenes]
    summary = summarise(decisions)
    rt.store.put_json(keys.dataset_file(dataset_id, keys.DECISIONS),
                      {"thresholds": spec.thresholds.model_dump(), "scenes": [d.model_dump() for d in decisions]})
    flags = _thing_flags(spec.preset)
    result = export_dataset(rt.store, dataset_id, cats, scenes, metric_of=policy.metric_for, summary=summary,
                            thing_flags=flags)
    categories = build_categories(cats, flags)
    manifest = DatasetManifest(
        dataset_id=dataset_id, job_id=job_id, tenant=stored.tenant, created_at=utcnow(), categories=categories,
        images=result.images, instances=result.instances, files=result.files, selection=summary,
        checksums=dataset_checksums(rt.store, dataset_id),
    )
    # The manifest is written last: its presence marks a complete dataset (the idempotency check above).
    rt.store.put_json(keys.dataset_manifest(dataset_id), manifest)
    tr.add_seconds(job_id, "curation", time.perf_counter() - t0)
    n_failed = tr.status(job_id).planned_scenes - len(ann_keys)
    note = f"{result.images} of {len(ann_keys)} annotated scenes kept" + (f"; {n_failed} scenes failed" if n_failed else "")
    tr.transition(job_id, JobState.succeeded, note, dataset_id=dataset_id)
    return {"dataset_id": dataset_id, "images": result.images}
