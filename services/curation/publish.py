"""Publish a reviewed dataset version: the job's dataset assembled again, honouring people's decisions.

Version 1 is the dataset the job curated (`ds-{job}`) and is never touched. Version n >= 2 is a complete,
immutable dataset of its own, `ds-{job}-v{n}`, written by the same exporters as the job's (every format
the job asked for; image ids are stable across versions), so training and downloads take it as any
dataset id; its record is `jobs/{job}/versions/{n:04d}.json`.

How decisions override the selection rules:
  * a sample rejected by a person is left out; an instance rejected by a person is left out;
  * an instance accepted by a person is kept even if a rule rejected it;
  * a sample accepted by a person is kept even if a rule dropped it (with its kept instances);
  * undecided samples and instances keep the rules' verdict.
"""

from __future__ import annotations

import logging
import tempfile

from dreammask.shared import keys
from dreammask.shared import review as rv
from dreammask.shared.masks import load_rgb
from dreammask.shared.orchestration import job_scene_ids
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import (
    CuratedScene,
    DatasetManifest,
    InstanceDecision,
    SceneAnnotation,
    SceneDecision,
    utcnow,
)

from .exporters import JsonStream, build_exporters
from .sample import build_sample, decode_masks
from .selection import SelectionPolicy
from .stage import export_context

log = logging.getLogger(__name__)


def apply_review(decision: SceneDecision, review: rv.SampleReview | None) -> tuple[SceneDecision, dict[str, int]]:
    """The rules' decision with a person's marks applied, and counts of what the marks changed."""
    counts = {"samples_rejected": 0, "samples_accepted": 0, "instances_rejected": 0, "instances_accepted": 0}
    if review is None:
        return decision, counts
    insts = []
    for d in decision.instances:
        mark = review.instances.get(str(d.instance_id))
        if mark is None:
            insts.append(d)
        elif mark.decision == "reject":
            counts["instances_rejected"] += 1
            insts.append(InstanceDecision(instance_id=d.instance_id, category=d.category, kept=False,
                                          reasons=[*d.reasons, f"review (rejected by {mark.who})"]))
        else:
            counts["instances_accepted"] += 1
            insts.append(InstanceDecision(instance_id=d.instance_id, category=d.category, kept=True, reasons=[]))
    kept, reason = decision.kept, decision.reason
    if review.sample is not None:
        if review.sample.decision == "reject":
            counts["samples_rejected"] += 1
            kept, reason = False, f"review: rejected by {review.sample.who}"
        else:
            counts["samples_accepted"] += 1
            kept, reason = True, None
    if kept and not any(i.kept for i in insts):
        kept, reason = False, "review: every instance rejected"
    return SceneDecision(scene_id=decision.scene_id, kept=kept, reason=reason, instances=insts), counts


def publish_version(rt: Runtime, job_id: str, n: int) -> dict:
    """Build version `n` (its record must exist, state pending). Idempotent: a published version stays."""
    store = rt.store
    record = store.get_model(rv.version(job_id, n), rv.DatasetVersion)
    if record.state == "published":
        return {"dataset_id": record.dataset_id, "skipped": "exists"}
    try:
        result = _publish(rt, job_id, record)
    except Exception as e:  # noqa: BLE001 - the record says why; the caller may publish again
        log.exception("publishing version %s of job %s failed", n, job_id)
        record.state, record.error = "failed", f"{type(e).__name__}: {e}"
        store.put_json(rv.version(job_id, n), record)
        raise
    return result


def _publish(rt: Runtime, job_id: str, record: rv.DatasetVersion) -> dict:
    """The per-scene curation and the assemble step again, into the version's own dataset id, with the
    review marks applied to each scene's decision. One scene in memory at a time, as in curation."""
    store = rt.store
    stored = rt.tracker.spec(job_id)
    ctx = export_context(rt, job_id)
    ctx.dataset_id = record.dataset_id
    by_name = {c.name: c for c in ctx.categories}
    policy = SelectionPolicy(ctx.spec.thresholds)
    reviews = rv.read_reviews(store, job_id)
    totals: dict[str, int] = {}
    kept = instances = curated = 0
    with tempfile.TemporaryDirectory(prefix="dm-publish-") as spool:
        ctx.spool_dir = spool
        exporters = build_exporters(ctx.spec.export_formats)
        for ex in exporters:
            ex.start(ctx)
        decisions = JsonStream(ctx, ["scenes"])
        for sid in job_scene_ids(rt, job_id) or []:
            first = store.try_get_model(keys.curated(job_id, sid), CuratedScene)
            if first is None:  # the scene failed before curation: not in any version
                continue
            ann = store.get_model(keys.annotation(job_id, sid), SceneAnnotation)
            decision, counts = apply_review(policy(ann), reviews.get(sid))
            for c, v in counts.items():
                totals[c] = totals.get(c, 0) + v
            rec = first.model_copy(update={"kept": decision.kept, "decision": decision, "dataset_image": None,
                                           "instances": [], "pieces": {}})
            if decision.kept:
                raw = store.get_bytes(ann.image_key)
                image = load_rgb(raw)
                masks = decode_masks(ann)
                sample = build_sample(ann, decision, image, raw, by_name, policy.metric_for,
                                      novel_category=rec.novel_category, caption=rec.caption, masks=masks)
                rec.dataset_image = f"{keys.IMAGES_DIR}/{sid}.png"
                store.put_bytes(ctx.key(rec.dataset_image), raw, "image/png")
                rec.pieces = {ex.name: ex.write_scene(ctx, sample) for ex in exporters}
                rec.instances = sample.instances
            curated += 1
            kept += rec.kept
            instances += len(rec.instances) if rec.kept else 0
            decisions.add("scenes", rec.decision.model_dump())
            for ex in exporters:
                ex.add(ctx, rec)
        decisions.upload(ctx.key(keys.DECISIONS), {"thresholds": ctx.spec.thresholds.model_dump(),
                                                   "reviews": totals, "version": record.version})
        files = {"selection": ctx.key(keys.DECISIONS)}
        for ex in exporters:
            files.update(ex.finish(ctx))
    card_key = ctx.key(keys.CARD_JSON)
    if store.exists(card_key):
        card = store.get_json(card_key)
        card.update({"version": record.version, "first_version": keys.dataset_id_for_job(job_id),
                     "reviews": totals})
        store.put_json(card_key, card)
    card = ctx.scratch.get("card", {})
    manifest = DatasetManifest(
        dataset_id=record.dataset_id, job_id=job_id, tenant=stored.tenant, created_at=utcnow(),
        categories=ctx.categories, images=kept, instances=instances, files=files,
        selection={**card.get("selection", {}), "version": record.version, "reviews": totals},
    )
    store.put_json(keys.dataset_manifest(record.dataset_id), manifest)
    record.state, record.published_at, record.error = "published", utcnow(), None
    record.reviews, record.images, record.instances = totals, kept, instances
    store.put_json(rv.version(job_id, record.version), record)
    return {"dataset_id": record.dataset_id, "images": kept, "instances": instances, "scenes": curated}
