"""Publish a reviewed dataset version: the job's dataset assembled again, honouring people's decisions.

Version 1 is the dataset the job curated (`ds-{job}`) and is never touched. Version n >= 2 is a complete,
immutable dataset of its own, `ds-{job}-v{n}`, made by the same steps as the job's (`assembly.py`: every
format the job asked for, image ids stable across versions, a SHA-256 per file in its manifest), so
training and downloads take it as any dataset id; its record is `jobs/{job}/versions/{n:04d}.json`. It is
made from the review marks it was requested with (`jobs/{job}/version-marks/{n:04d}.json`); asking again
with the same marks gives the same version back, never a second copy (the API's `request_version`).

How decisions override the selection rules:
  * a sample rejected by a person is left out; an instance rejected by a person is left out;
  * an instance accepted by a person is kept even if a rule rejected it;
  * a sample accepted by a person is kept even if a rule dropped it (with its kept instances);
  * undecided samples and instances keep the rules' verdict.
"""

from __future__ import annotations

import logging

from dreammask.shared import keys, quotas
from dreammask.shared import review as rv
from dreammask.shared.masks import load_rgb
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import CuratedScene, InstanceDecision, SceneAnnotation, SceneDecision, utcnow

from .assembly import assemble_dataset, export_scene
from .exporters import build_exporters
from .sample import decode_masks
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
    finally:
        _measure_soon(rt, job_id)
    return result


def _measure_soon(rt: Runtime, job_id: str) -> None:
    """The version's bytes were reserved as an estimate when it was requested: the supervisor measures the
    job (its folder, its datasets and every version) and the measurement replaces the estimate, for a
    failed assembly too (what it wrote before failing counts until it is deleted)."""
    try:
        quotas.schedule_measure(rt.redis, rt.tracker.spec(job_id).tenant, "job", job_id)
    except Exception:  # noqa: BLE001 - the estimate then stands until the job is measured for another reason
        log.warning("could not ask for job %s to be measured after publishing", job_id)


def _publish(rt: Runtime, job_id: str, record: rv.DatasetVersion) -> dict:
    """The job's dataset made again, into the version's own dataset id, by the same two steps as the job's
    (`assembly.export_scene` per kept scene, `assembly.assemble_dataset`), with the review marks the version
    was requested with applied to each scene's decision. One scene in memory at a time, as in curation."""
    store = rt.store
    ctx = export_context(rt, job_id)
    ctx.dataset_id = record.dataset_id
    totals: dict[str, int] = {}
    ctx.version = {"version": record.version, "first_version": keys.dataset_id_for_job(job_id), "reviews": totals}
    policy = SelectionPolicy(ctx.spec.thresholds)
    exporters = build_exporters(ctx.spec.export_formats)
    snapshot = store.try_get_model(rv.version_marks(job_id, record.version), rv.VersionMarks)
    reviews = snapshot.reviews if snapshot is not None else rv.read_reviews(store, job_id)

    def reviewed(sid: str) -> CuratedScene | None:
        first = store.try_get_model(keys.curated(job_id, sid), CuratedScene)
        if first is None:  # the scene failed before curation: not in any version
            return None
        decision, counts = apply_review(first.decision, reviews.get(sid))
        for c, v in counts.items():
            totals[c] = totals.get(c, 0) + v
        rec = first.model_copy(update={"kept": decision.kept, "decision": decision, "dataset_image": None,
                                       "instances": [], "pieces": {}})
        if decision.kept:
            ann = store.get_model(keys.annotation(job_id, sid), SceneAnnotation)
            raw = store.get_bytes(ann.image_key)
            export_scene(ctx, exporters, rec, ann, decision, load_rgb(raw), raw, decode_masks(ann), policy)
        return rec

    done = assemble_dataset(rt, ctx, reviewed)
    record.state, record.published_at, record.error = "published", utcnow(), None
    record.reviews, record.images, record.instances = totals, done.kept, done.instances
    store.put_json(rv.version(job_id, record.version), record)
    return {"dataset_id": record.dataset_id, "images": done.kept, "instances": done.instances,
            "scenes": done.curated}
