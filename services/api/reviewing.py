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
    if st.state != JobState.succeeded or not st.dataset_id:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"job {job_id} is {st.state.value}: a version can be published once it succeeded")
    return st.dataset_id


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
            return _first_version(rt, job_id), False
        existing = rv.list_versions(rt.store, job_id)
        same = [v for v in existing if v.content_digest == digest]
        if same:
            record = same[-1]
            if record.state != "failed":
                return record, False
            record.state, record.error = "pending", None  # publish it again, under the same number
        else:
            # A version adds a dataset: refused once the tenant's storage quota is used up (429).
            quotas.check_stored_bytes(rt.redis, rt.tracker.spec(job_id).tenant,
                                      quotas.Limits.from_settings(rt.settings))
            # Numbers are never reused, not even those of deleted versions: a dataset id names one content.
            last = rt.store.get_json(_last_version(job_id)) if rt.store.exists(_last_version(job_id)) else 1
            n = max([1, int(last), *(v.version for v in existing)]) + 1
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


def _last_version(job_id: str) -> str:
    return keys.job_prefix(job_id) + "last-version.json"


def versions(rt: Runtime, job_id: str) -> list[dict]:
    """Every version of a job's dataset, version 1 (the curated one) first."""
    first = _first_version(rt, job_id)
    return [v.model_dump(mode="json", exclude={"schema_version"})
            for v in ([first] if first else []) + rv.list_versions(rt.store, job_id)]
