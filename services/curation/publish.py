"""Publish a reviewed dataset version: the job's dataset assembled again, honouring people's decisions.

Version 1 is the dataset the job curated (`ds-{job}`) and is never touched. Version n >= 2 is a complete,
immutable dataset of its own, `ds-{job}-v{n}` (same export layout, so training and downloads take it as
any dataset id), recorded in `jobs/{job}/versions/{n:04d}.json`.

How decisions override the selection rules:
  * a sample rejected by a person is left out; an instance rejected by a person is left out;
  * an instance accepted by a person is kept even if a rule rejected it;
  * a sample accepted by a person is kept even if a rule dropped it (with its kept instances);
  * undecided samples and instances keep the rules' verdict.
"""

from __future__ import annotations

import logging

from dreammask.shared import keys
from dreammask.shared import review as rv
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import (
    CategorySet,
    DatasetManifest,
    InstanceDecision,
    SceneAnnotation,
    SceneDecision,
    SceneLayout,
    utcnow,
)

from .export import build_categories, export_dataset
from .selection import SelectionPolicy, summarise
from .stage import _thing_flags

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
    store = rt.store
    stored = rt.tracker.spec(job_id)
    spec = stored.spec
    dataset_id = record.dataset_id
    policy = SelectionPolicy(spec.thresholds)
    reviews = rv.read_reviews(store, job_id)
    cats = store.get_model(keys.categories(job_id), CategorySet)
    totals: dict[str, int] = {}
    scenes = []
    for k in sorted(store.list(keys.job_prefix(job_id) + "annotations/")):
        ann = store.get_model(k, SceneAnnotation)
        layout = store.try_get_model(keys.layout(job_id, ann.scene_id), SceneLayout)
        decision, counts = apply_review(policy(ann), reviews.get(ann.scene_id))
        for c, v in counts.items():
            totals[c] = totals.get(c, 0) + v
        scenes.append((ann, layout, decision))
    summary = summarise(d for _, _, d in scenes)
    store.put_json(keys.dataset_file(dataset_id, keys.DECISIONS),
                   {"thresholds": spec.thresholds.model_dump(), "reviews": totals,
                    "scenes": [d.model_dump() for _, _, d in scenes]})
    flags = _thing_flags(spec.preset)
    result = export_dataset(store, dataset_id, cats, scenes, metric_of=policy.metric_for, summary=summary,
                            thing_flags=flags)
    card = dict(result.card)
    card.update({"version": record.version, "first_version": keys.dataset_id_for_job(job_id), "reviews": totals})
    store.put_json(keys.dataset_file(dataset_id, keys.CARD_JSON), card)
    manifest = DatasetManifest(
        dataset_id=dataset_id, job_id=job_id, tenant=stored.tenant, created_at=utcnow(),
        categories=build_categories(cats, flags), images=result.images, instances=result.instances,
        files=result.files, selection={**summary, "version": record.version, "reviews": totals},
    )
    store.put_json(keys.dataset_manifest(dataset_id), manifest)
    record.state, record.published_at, record.error = "published", utcnow(), None
    record.reviews, record.images, record.instances = totals, result.images, result.instances
    store.put_json(rv.version(job_id, record.version), record)
    return {"dataset_id": dataset_id, "images": result.images, "instances": result.instances}
