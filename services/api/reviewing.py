"""Review operations shared by the REST API (/v1/jobs/{id}/reviews, /v1/datasets/{id}/versions) and the UI:
record a person's decision, list decisions, ask for a new dataset version, list versions."""

from __future__ import annotations

import hashlib

from fastapi import HTTPException, status

from dreammask.shared import keys, quotas
from dreammask.shared import review as rv
from dreammask.shared.celery_app import TASK_PUBLISH
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import DatasetManifest, JobState, SceneAnnotation, utcnow
from dreammask.shared.storage import ObjectNotFound


def who(tenant: str, api_key: str) -> str:
    """A reviewer: the tenant and a short fingerprint of the key (never the key)."""
    return f"{tenant}/{hashlib.sha256(api_key.encode()).hexdigest()[:8]}"


def record_decision(rt: Runtime, job_id: str, scene_id: str, instance_id: int | None, decision: str,
                    reviewer: str) -> rv.SampleReview:
    try:
        keys.check_id(scene_id, "scene id")
        ann = rt.store.get_model(keys.annotation(job_id, scene_id), SceneAnnotation)
    except (ValueError, ObjectNotFound):
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"scene_id: job {job_id} has no annotated scene {scene_id!r}") from None
    if instance_id is not None and instance_id not in {i.instance_id for i in ann.instances}:
        have = ", ".join(str(i.instance_id) for i in ann.instances) or "none"
        raise HTTPException(422,
                            f"instance_id: scene {scene_id} has no instance {instance_id} (it has: {have})")
    if decision not in ("accept", "reject", "clear"):
        raise HTTPException(422,
                            "decision: must be 'accept', 'reject' or 'clear'")
    key = rv.review(job_id, scene_id)
    # Two reviewers on one sample: read-modify-write under a lock, so neither decision is lost.
    with rt.redis.lock(f"dreammask:review-lock:{job_id}:{scene_id}", timeout=30, blocking_timeout=30):
        rec = rt.store.try_get_model(key, rv.SampleReview) or rv.SampleReview(job_id=job_id, scene_id=scene_id)
        rec.apply(rv.ReviewEvent(instance_id=instance_id, decision=decision, who=reviewer, at=utcnow()),
                  keep=rt.settings.review_history_limit)
        rt.store.put_json(key, rec)
    return rec


def dataset_of_job(rt: Runtime, job_id: str) -> str:
    st = rt.tracker.status(job_id)
    if st.state != JobState.succeeded:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"job {job_id} is {st.state.value}: a version can be published once it succeeded")
    # Version 1 may have been deleted (the record then names no dataset): versions are made from the job's
    # curated records, not from version 1, so publishing goes on.
    return st.dataset_id or keys.dataset_id_for_job(job_id)


def request_version(rt: Runtime, job_id: str, reviewer: str,
                    note: str | None = None) -> tuple[rv.DatasetVersion, bool]:
    """The version holding the review marks in force: an existing one when a version was already published
    (or is being published) from the same marks, version 1 when there are none; else the next version
    number, recorded as pending with a snapshot of the marks, its assembly queued (curation queue).
    Returns (version, created): content that did not change is never copied a second time."""
    dataset_of_job(rt, job_id)
    with rt.redis.lock(f"dreammask:version-lock:{job_id}", timeout=60, blocking_timeout=60):
        reviews = rv.read_reviews(rt.store, job_id)
        digest = rv.marks_digest(reviews)
        if digest == rv.NO_MARKS_DIGEST:
            first = _first_version(rt, job_id)
            if first is not None:
                return first, False
            # Version 1 was deleted: the curated content is published again as a new version (below).
        existing = rv.list_versions(rt.store, job_id)
        same = [v for v in existing if v.content_digest == digest]
        if same and same[-1].state != "failed":
            return same[-1], False
        # A version adds a dataset: its estimated bytes count in the tenant's stored-bytes quota at once
        # (429 naming the quota when they do not fit), until the supervisor measures the job after the
        # assembly (`publish_version` asks for that).
        spec = rt.tracker.spec(job_id)
        quotas.reserve_bytes(rt.redis, spec.tenant, job_id,
                             quotas.version_bytes_estimate(spec.spec.num_scenes, spec.spec.image_size),
                             quotas.Limits.from_settings(rt.settings))
        if same:
            record = same[-1]
            record.state, record.error = "pending", None  # publish it again, under the same number
        else:
            n = _next_version_number(rt, job_id, existing)
            rt.store.put_json(_last_version(job_id), n)
            snapshot = {sid: r.model_copy(update={"history": []}) for sid, r in reviews.items()}
            rt.store.put_json(rv.version_marks(job_id, n),
                              rv.VersionMarks(job_id=job_id, version=n, digest=digest, reviews=snapshot))
            record = rv.DatasetVersion(job_id=job_id, version=n, dataset_id=rv.version_dataset_id(job_id, n),
                                       who=reviewer, note=note, content_digest=digest)
        rt.store.put_json(rv.version(job_id, record.version), record)
    rt.dispatcher.send(TASK_PUBLISH, job_id, record.version)
    return record, True


def _first_version(rt: Runtime, job_id: str) -> rv.DatasetVersion | None:
    first = keys.dataset_id_for_job(job_id)
    m = rt.store.try_get_model(keys.dataset_manifest(first), DatasetManifest)
    if m is None:
        return None
    return rv.DatasetVersion(job_id=job_id, version=1, dataset_id=first, state="published", created_at=m.created_at,
                             published_at=m.created_at, who="curation", images=m.images, instances=m.instances,
                             note="as curated by the selection rules", content_digest=rv.NO_MARKS_DIGEST)


def _next_version_number(rt: Runtime, job_id: str, existing: list[rv.DatasetVersion]) -> int:
    """Numbers are never reused, not even those of deleted versions (a dataset id names one content): past
    the last number handed out, every version record, and every marks snapshot (which outlive a deleted
    version, so a job published before `last-version.json` existed is covered too)."""
    last = rt.store.get_json(_last_version(job_id)) if rt.store.exists(_last_version(job_id)) else 1
    stems = [k.rsplit("/", 1)[1].split(".")[0] for k in rt.store.list(rv.version_marks_prefix(job_id))]
    snapshots = [int(stem) for stem in stems if stem.isdigit()]
    return max([1, int(last), *(v.version for v in existing), *snapshots]) + 1


def _last_version(job_id: str) -> str:
    return keys.job_prefix(job_id) + "last-version.json"


def versions(rt: Runtime, job_id: str) -> list[dict]:
    """Every version of a job's dataset, version 1 (the curated one) first."""
    first = _first_version(rt, job_id)
    return [v.model_dump(mode="json", exclude={"schema_version"})
            for v in ([first] if first else []) + rv.list_versions(rt.store, job_id)]
