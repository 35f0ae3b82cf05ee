"""Curation, in two steps of the chain.

`curate_scenes` (per scene, as each annotation lands): select instances and decide the scene, write its
export pieces (the image once into the dataset, panoptic PNG, label map, YOLO labels...), a thumbnail, and
last the scene's curated record. `assemble` (per job, after the last scene): stream the dataset's index
files (COCO JSON, parquet shards, card, contact sheet) from the curated records, then the manifest, which
marks the dataset complete. Neither holds more than one scene (or one row group) in memory."""

from __future__ import annotations

import io
import tempfile
import time

from dreammask.shared import keys
from dreammask.shared.masks import CorruptImage, load_rgb
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import (
    CategorySet,
    CuratedScene,
    DatasetManifest,
    JobState,
    SceneAnnotation,
    SceneLayout,
    utcnow,
)
from dreammask.shared.skeleton import JobResult, SceneResult
from dreammask.shared.storage import ObjectNotFound

from .categories import dataset_categories
from .checksums import dataset_checksums
from .contact_sheet import draw_scene
from .exporters import ExportContext, JsonStream, build_exporters
from .sample import build_sample, decode_masks
from .sample_index import SampleIndexWriter, write_thumbnails
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
    by_name = {c.name: c for c in ctx.categories}
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
            sample = build_sample(ann, decision, image, raw, by_name, policy.metric_for,
                                  novel_category=record.novel_category, caption=record.caption, masks=masks)
            record.dataset_image = f"{keys.IMAGES_DIR}/{sid}.png"
            # The image enters the dataset once, as rendered; every format points at it.
            rt.store.put_bytes(ctx.key(record.dataset_image), raw, "image/png")
            record.pieces = {ex.name: ex.write_scene(ctx, sample) for ex in exporters}
            record.instances = sample.instances
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
    stored = tr.spec(job_id)
    dataset_id = keys.dataset_id_for_job(job_id)
    if rt.store.exists(keys.dataset_manifest(dataset_id)):
        tr.transition(job_id, JobState.succeeded, dataset_id=dataset_id)
        return JobResult(info={"dataset_id": dataset_id, "skipped": "exists"})
    t0 = time.perf_counter()
    ctx = export_context(rt, job_id)
    # Every streamed file is spooled under one temporary folder, removed whatever happens.
    with tempfile.TemporaryDirectory(prefix="dm-assemble-") as spool:
        ctx.spool_dir = spool
        exporters = build_exporters(ctx.spec.export_formats)
        for ex in exporters:
            ex.start(ctx)
        decisions = JsonStream(ctx, ["scenes"])
        review_index = SampleIndexWriter(rt.store, job_id, ctx.categories)
        curated = kept = instances = 0
        scene_seeds: dict[str, int] = {}
        for planned in ctx.plan.scenes:
            sid = planned.scene_id
            rec = rt.store.try_get_model(keys.curated(job_id, sid), CuratedScene)
            if rec is None:  # the scene failed at some stage (its failure record says why)
                continue
            curated += 1
            kept += rec.kept
            if rec.kept:
                scene_seeds[sid] = planned.seed
            instances += len(rec.instances) if rec.kept else 0
            decisions.add("scenes", rec.decision.model_dump())
            review_index.add(rec)
            for ex in exporters:
                ex.add(ctx, rec)
        if not curated:
            failures = tr.failures(job_id, limit=3)
            detail = "; ".join(f"{f.scene_id}: {f.reason}" for f in failures) or "no scene was curated"
            tr.transition(job_id, JobState.failed, f"all scenes failed ({detail})")
            return JobResult(proceed=False, info={"dataset_id": None})
        decisions.upload(ctx.key(keys.DECISIONS), {"thresholds": ctx.spec.thresholds.model_dump()})
        review_index.finish()  # the review UI's pages, before the job reads as done
        files = {"selection": ctx.key(keys.DECISIONS)}
        for ex in exporters:
            files.update(ex.finish(ctx))
    card = ctx.scratch.get("card", {})
    manifest = DatasetManifest(
        dataset_id=dataset_id, job_id=job_id, tenant=stored.tenant, created_at=utcnow(),
        categories=ctx.categories, images=kept, instances=instances, files=files,
        selection=card.get("selection", {}),
        checksums=dataset_checksums(rt.store, dataset_id),
        job_seed=ctx.plan.job_seed, scene_seeds=scene_seeds,
    )
    # The manifest is written last: its presence marks a complete dataset (the idempotency check above).
    rt.store.put_json(keys.dataset_manifest(dataset_id), manifest)
    tr.add_seconds(job_id, "assemble", time.perf_counter() - t0)
    n_failed = tr.status(job_id).planned_scenes - curated
    note = f"{kept} of {curated} curated scenes kept" + (f"; {n_failed} scenes failed" if n_failed else "")
    tr.transition(job_id, JobState.succeeded, note, dataset_id=dataset_id)
    return JobResult(info={"dataset_id": dataset_id, "images": kept})
