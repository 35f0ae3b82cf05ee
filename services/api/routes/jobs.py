"""/v1/jobs: submit, list, inspect, cancel and resume synthesis jobs; browse their scenes and files."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse

from dreammask.shared import keys
from dreammask.shared import orchestration as orch
from dreammask.shared.jobs import JobNotFound
from dreammask.shared.schemas import (
    JobSpec,
    JobState,
    JobView,
    SceneAnnotation,
    SceneFailure,
    SceneLayout,
    StoredJobSpec,
)
from dreammask.shared.storage import ObjectNotFound
from dreammask.shared.submission import SubmissionRejected, create_job

from .. import errors
from .. import quotas as quota
from ..deps import RuntimeDep, SettingsDep, TenantDep, base_url
from ..metrics import count_submission
from ..streaming import object_response
from ..validation import problems_to_422
from ..views import JOB_SPEC_EXAMPLES, CategoriesView, JobList, ResumeResult, SceneList

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=errors.responses(*errors.V1_ERRORS))
_NO_JOB = {"e404": {"detail": "no job 'job-20260101-000000-abcdef'"}}


def _owned_spec(rt, job_id: str, tenant: str) -> StoredJobSpec:
    try:
        keys.check_id(job_id, "job id")
        stored = rt.tracker.spec(job_id)
    except (JobNotFound, ValueError):
        stored = None
    # A foreign job is reported exactly like a missing one.
    if stored is None or stored.tenant != tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}")
    return stored


def _view(rt, request: Request, settings, stored: StoredJobSpec, detail: bool = True) -> JobView:
    job_id = stored.job_id
    st = rt.tracker.status(job_id)
    root = base_url(request, settings)
    return JobView(
        job_id=job_id, url=f"{root}/v1/jobs/{job_id}", state=st.state, name=stored.spec.name,
        created_at=st.created_at, updated_at=st.updated_at, planned_scenes=st.planned_scenes,
        stages=rt.tracker.counts(job_id, st.planned_scenes) if detail else {},
        transitions=st.transitions if detail else [], error=st.error,
        errors=rt.tracker.failures(job_id, limit=20) if detail else [],
        dataset_id=st.dataset_id,
        dataset_url=f"{root}/v1/datasets/{st.dataset_id}" if st.dataset_id else None,
        rerender_of=stored.rerender_of,
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobView, responses=errors.responses(413, 422, 429))
def submit_job(spec: Annotated[JobSpec, Body(openapi_examples=JOB_SPEC_EXAMPLES)], request: Request, response: Response, rt: RuntimeDep, settings: SettingsDep,
               tenant: TenantDep):
    try:
        stored = create_job(rt, spec, tenant)  # 429 over a quota (quotas.QuotaExceeded, answered in main.py)
    except SubmissionRejected as e:
        raise problems_to_422(e.problems) from None
    try:
        orch.start(rt, stored.job_id)
    except Exception as e:  # noqa: BLE001 - broker down: keep the job, say how to continue
        log.error("could not enqueue job %s: %s", stored.job_id, e)
        try:
            rt.tracker.transition(stored.job_id, JobState.failed, f"broker unavailable at submission: {e}")
        except Exception:  # noqa: BLE001 - Redis is the broker: the record stays 'queued' until resumed
            pass
        return JSONResponse(status_code=503, content={
            "detail": f"the job was saved as {stored.job_id} but could not be queued (broker unavailable); "
                      f"POST /v1/jobs/{stored.job_id}/resume when the broker is back",
            "job_id": stored.job_id,
        })
    count_submission(tenant, settings)
    view = _view(rt, request, settings, stored, detail=False)
    response.headers["Location"] = view.url
    return view


@router.get("", response_model=JobList, responses=errors.responses(422))
def list_jobs(request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep,
              status_filter: Annotated[JobState | None, Query(alias="status")] = None,
              limit: Annotated[int, Query(ge=1, le=200)] = 50,
              offset: Annotated[int, Query(ge=0)] = 0):
    ids = sorted(rt.tracker.list_jobs(tenant), reverse=True)  # newest first
    items = []
    matched = 0
    for job_id in ids:
        if status_filter is not None and rt.tracker.status(job_id).state != status_filter:
            continue
        matched += 1
        if offset < matched <= offset + limit:
            items.append(_view(rt, request, settings, rt.tracker.spec(job_id), detail=False))
    return {"items": items, "total": matched, "limit": limit, "offset": offset}


@router.get("/{job_id}", response_model=JobView, responses=errors.responses(404, 422, **_NO_JOB))
def get_job(job_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep):
    return _view(rt, request, settings, _owned_spec(rt, job_id, tenant))


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobView,
             responses=errors.responses(404, 409, 422, **_NO_JOB))
def cancel_job(job_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep):
    stored = _owned_spec(rt, job_id, tenant)
    st = rt.tracker.status(job_id)
    if st.state in (JobState.succeeded, JobState.failed):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} already {st.state.value}; nothing to cancel")
    rt.tracker.cancel(job_id)
    return _view(rt, request, settings, stored)


@router.post("/{job_id}/resume", status_code=status.HTTP_202_ACCEPTED, response_model=ResumeResult,
             responses=errors.responses(404, 409, 422, 429, **_NO_JOB))
def resume_job(job_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep):
    stored = _owned_spec(rt, job_id, tenant)
    reopened = rt.tracker.status(job_id).state in (JobState.failed, JobState.cancelled)
    if reopened:
        quota.reserve_slot(rt, settings, tenant, job_id)  # running again: it takes a job slot (429 if none)
    try:
        enqueued = orch.resume(rt, job_id)
    except orch.CannotResume as e:
        if reopened:
            quota.release_slot(rt, tenant, job_id)
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    return {"job": _view(rt, request, settings, stored), "enqueued": enqueued}


@router.get("/{job_id}/categories", response_model=CategoriesView, responses=errors.responses(
    404, 422, e404={"detail": "categories are not ready yet"}))
def get_categories(job_id: str, rt: RuntimeDep, tenant: TenantDep,
                   include: Annotated[str | None, Query(description="`dropped`: also list the candidates "
                                                        "association dropped, each with its reason")] = None):
    wanted = {part.strip() for part in (include or "").split(",") if part.strip()}
    if wanted - {"dropped"}:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            f"include: unknown value(s) {sorted(wanted - {'dropped'})}; the only value is 'dropped'")
    _owned_spec(rt, job_id, tenant)
    try:
        cats = rt.store.get_json(keys.categories(job_id))
    except ObjectNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "categories are not ready yet") from None
    # The dropped list can hold hundreds of names: only on request; its size always.
    dropped = cats.pop("dropped", []) or []
    cats["dropped_count"] = len(dropped)
    if "dropped" in wanted:
        cats["dropped"] = dropped
    # As stored, not re-serialised through the model: a response without `dropped` must not show it as null.
    return JSONResponse(cats)


@router.get("/{job_id}/scenes", response_model=SceneList, responses=errors.responses(404, 422, **_NO_JOB))
def list_scenes(job_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep,
                limit: Annotated[int, Query(ge=1, le=100)] = 20,
                offset: Annotated[int, Query(ge=0)] = 0):
    _owned_spec(rt, job_id, tenant)
    st = rt.tracker.status(job_id)
    root = f"{base_url(request, settings)}/v1/jobs/{job_id}/files"
    items = []
    for i in range(offset, min(st.planned_scenes, offset + limit)):
        sid = keys.scene_id(i)
        layout = rt.store.try_get_model(keys.layout(job_id, sid), SceneLayout)
        has_image = rt.store.exists(keys.image(job_id, sid))
        ann = rt.store.try_get_model(keys.annotation(job_id, sid), SceneAnnotation)
        failure = rt.store.try_get_model(keys.failure(job_id, sid), SceneFailure)
        stages = {}
        for stage in rt.chain.scene_stages:
            if rt.store.exists(stage.output(job_id, sid)):
                stages[stage.name] = "done"
            else:
                stages[stage.name] = "failed" if failure and failure.stage == stage.name else "pending"
        items.append({
            "scene_id": sid,
            "novel_category": layout.novel_category if layout else None,
            "caption": layout.caption if layout else None,
            "stages": stages,
            "failed": failure.model_dump(mode="json") if failure else None,
            "image_url": f"{root}/images/{sid}.png" if has_image else None,
            "layout_url": f"{root}/layouts/{sid}.json" if layout else None,
            "annotation_url": f"{root}/annotations/{sid}.json" if ann else None,
            "instances": [
                {"instance_id": x.instance_id, "category": x.category, "is_novel": x.is_novel, "bbox": x.bbox,
                 "area": x.area, "scores": x.scores} for x in (ann.instances if ann else [])
            ],
        })
    return {"items": items, "total": st.planned_scenes, "limit": limit, "offset": offset}


_FILE_RESPONSES = {
    200: {"description": "the file (HEAD: headers only)", "content": {"application/octet-stream": {}}},
    206: {"description": "the requested byte range", "content": {"application/octet-stream": {}}},
    **errors.responses(404, 416, 422, **_NO_JOB),
}


@router.get("/{job_id}/files/{path:path}", response_class=Response, responses=_FILE_RESPONSES)
@router.head("/{job_id}/files/{path:path}", response_class=Response, responses=_FILE_RESPONSES)
def get_job_file(job_id: str, path: str, request: Request, rt: RuntimeDep, tenant: TenantDep):
    """A layout, image, annotation or failure record of the job; GET or HEAD, with ETag and Range."""
    _owned_spec(rt, job_id, tenant)
    if path.split("/")[0] not in ("layouts", "images", "renders", "annotations", "curated", "failures") or ".." in path:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no file {path!r} in job {job_id}")
    return object_response(rt.store, keys.job_prefix(job_id) + path, request)
