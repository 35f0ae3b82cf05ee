"""Curation, in two steps of the chain.

`curate_scenes` (per scene, as each annotation lands): select instances and decide the scene, write its
export pieces (`assembly.export_scene`: the image once into the dataset, panoptic PNG, label map, YOLO
labels...), a thumbnail, and last the scene's curated record. `assemble` (per job, after the last scene):
`assembly.assemble_dataset` streams the dataset's index files (COCO JSON, parquet shards, card, contact sheet)
from the curated records, then the manifest, which marks the dataset complete. Neither holds more than one
scene (or one row group) in memory; publishing a reviewed version runs the same two (publish.py)."""

from __future__ import annotations

import io
import time

from dreammask.shared import keys
from dreammask.shared.masks import CorruptImage, load_rgb
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import (
    CategorySet,
    CuratedScene,
    JobState,
    SceneAnnotation,
    SceneLayout,
)
from dreammask.shared.skeleton import JobResult, SceneResult
from dreammask.shared.storage import ObjectNotFound

from .assembly import assemble_dataset, export_scene
from .categories import dataset_categories
from .contact_sheet import draw_scene
from .exporters import ExportContext, build_exporters
from .sample import decode_masks
from .sample_index import write_thumbnails
from .selection import SelectionPolicy

THUMBNAIL_PX = 256


def export_context(rt: Runtime, job_id: str) -> ExportContext:
    spec = rt.tracker.spec(job_id).spec
    cats = rt.store.get_model(keys.categories(job_id), CategorySet)
    return ExportContext(store=rt.store, job_id=job_id, dataset_id=keys.dataset_id_for_job(job_id),
                         categories=dataset_categories(cats, spec.preset), spec=spec, plan=rt.tracker.plan(job_id))


def thumbnail_jpeg(image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


# ------------------------------------------------------------------ per scene

def curate_scenes_work(rt: Runtime, job_id: str, todo: list[str]) -> SceneResult:
    ctx = export_context(rt, job_id)
    spec = ctx.spec
    policy = SelectionPolicy(spec.thresholds)
    exporters = build_exporters(spec.export_formats)
    result = SceneResult()
    for sid in todo:
        try:
            ann = rt.store.get_model(keys.annotation(job_id, sid), SceneAnnotation)
            raw = rt.store.get_bytes(ann.image_key)
            image = load_rgb(raw)
        except ObjectNotFound as e:
            result.fail(sid, f"input missing: {e}")
            continue
        except CorruptImage as e:
            result.fail(sid, f"corrupt image: {e}")
            continue
        layout = rt.store.try_get_model(keys.layout(job_id, sid), SceneLayout)
        decision = policy(ann)
        masks = decode_masks(ann)
        metric = policy.metric_for(ann.instances[0]) if ann.instances else "quality"
        record = CuratedScene(
            job_id=job_id, scene_id=sid, kept=decision.kept, decision=decision, metric=metric,
            metric_values=[i.scores[policy.metric_for(i)] for i in ann.instances if policy.metric_for(i) in i.scores],
            width=int(image.shape[1]), height=int(image.shape[0]), image_key=ann.image_key,
            thumbnail_key=keys.curated_thumbnail(job_id, sid),
            novel_category=layout.novel_category if layout else None, caption=layout.caption if layout else None,
        )
        if decision.kept:
            export_scene(ctx, exporters, record, ann, decision, image, raw, masks, policy)
        kept_ids = {d.instance_id: d.kept for d in decision.instances}
        thumb = draw_scene(image, ann, kept_ids, thumb=THUMBNAIL_PX, title=sid, masks=masks)
        rt.store.put_bytes(record.thumbnail_key, thumbnail_jpeg(thumb), "image/jpeg")
        write_thumbnails(rt.store, job_id, ann, image=image, masks=masks)  # the review UI's grid
        # The record last: it marks the scene curated (the skeleton skips scenes whose record exists).
        rt.store.put_json(keys.curated(job_id, sid), record)
        result.done.append(sid)
    return result


# ------------------------------------------------------------------ per job

def assemble_work(rt: Runtime, job_id: str) -> JobResult:
    tr = rt.tracker
    dataset_id = keys.dataset_id_for_job(job_id)
    if rt.store.exists(keys.dataset_manifest(dataset_id)):
        tr.transition(job_id, JobState.succeeded, dataset_id=dataset_id)
        return JobResult(info={"dataset_id": dataset_id, "skipped": "exists"})
    t0 = time.perf_counter()
    done = assemble_dataset(rt, export_context(rt, job_id),
                            lambda sid: rt.store.try_get_model(keys.curated(job_id, sid), CuratedScene),
                            review_index=True)
    curated, kept = done.curated, done.kept
    if done.manifest is None:
        failures = tr.failures(job_id, limit=3)
        detail = "; ".join(f"{f.scene_id}: {f.reason}" for f in failures) or "no scene was curated"
        tr.transition(job_id, JobState.failed, f"all scenes failed ({detail})")
        return JobResult(proceed=False, info={"dataset_id": None})
    tr.add_seconds(job_id, "assemble", time.perf_counter() - t0)
    n_failed = tr.status(job_id).planned_scenes - curated
    note = f"{kept} of {curated} curated scenes kept" + (f"; {n_failed} scenes failed" if n_failed else "")
    tr.transition(job_id, JobState.succeeded, note, dataset_id=dataset_id)
    return JobResult(info={"dataset_id": dataset_id, "images": kept})
