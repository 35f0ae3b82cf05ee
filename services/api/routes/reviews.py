"""/v1/jobs/{id}/reviews and /v1/datasets/{id}/versions: review decisions and published versions, for
scripts (the UI does the same through its session)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field

from dreammask.shared import review as rv

from .. import reviewing
from ..deps import RuntimeDep, TenantDep
from ..errors import V1_ERRORS, responses
from .datasets import owned_job_of_dataset
from .jobs import _owned_spec

router = APIRouter(tags=["reviews"], responses=responses(*V1_ERRORS))
_NO_JOB = {"e404": {"detail": "no job 'job-20260101-000000-abcdef'"}}
_NO_DATASET = {"e404": {"detail": "no dataset 'ds-job-20260101-000000-abcdef'"}}


class ReviewIn(BaseModel):
    scene_id: str = Field(description="the sample (scene) reviewed, e.g. 's00003'")
    instance_id: int | None = Field(None, description="an instance of the scene; omit to decide the whole sample")
    decision: Literal["accept", "reject", "clear"]


class VersionIn(BaseModel):
    note: str | None = Field(None, max_length=500)


def _reviewer(request: Request, tenant: str) -> str:
    return reviewing.who(tenant, request.headers.get("authorization", "").partition(" ")[2])


@router.get("/v1/jobs/{job_id}/reviews", responses=responses(404, 422, **_NO_JOB))
def list_reviews(job_id: str, rt: RuntimeDep, tenant: TenantDep,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                 offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    _owned_spec(rt, job_id, tenant)
    items = sorted(rv.read_reviews(rt.store, job_id).values(), key=lambda r: r.scene_id)
    page = items[offset:offset + limit]
    return {"items": [r.model_dump(mode="json") for r in page], "total": len(items), "limit": limit,
            "offset": offset}


@router.post("/v1/jobs/{job_id}/reviews", status_code=status.HTTP_201_CREATED,
             responses=responses(404, 413, 422, **_NO_JOB))
def post_review(job_id: str, body: ReviewIn, request: Request, rt: RuntimeDep, tenant: TenantDep) -> dict:
    _owned_spec(rt, job_id, tenant)
    rec = reviewing.record_decision(rt, job_id, body.scene_id, body.instance_id, body.decision,
                                    _reviewer(request, tenant))
    return rec.model_dump(mode="json")


def _job_of_dataset(rt, dataset_id: str, tenant: str) -> str:
    return owned_job_of_dataset(rt, dataset_id, tenant)


@router.get("/v1/datasets/{dataset_id}/versions", responses=responses(404, 422, **_NO_DATASET))
def list_versions(dataset_id: str, rt: RuntimeDep, tenant: TenantDep) -> dict[str, Any]:
    job_id = _job_of_dataset(rt, dataset_id, tenant)
    return {"job_id": job_id, "items": reviewing.versions(rt, job_id)}


@router.post("/v1/datasets/{dataset_id}/versions", status_code=status.HTTP_202_ACCEPTED,
             responses={200: {"description": "the marks in force were published already: that version"},
                        **responses(404, 413, 422, 429, **_NO_DATASET)})
def publish(dataset_id: str, body: VersionIn, request: Request, response: Response, rt: RuntimeDep,
            tenant: TenantDep) -> dict:
    """A new version from the review marks in force (202, assembled in the background), or the version that
    already holds them (200): unchanged content is never copied twice."""
    job_id = _job_of_dataset(rt, dataset_id, tenant)
    rec, created = reviewing.request_version(rt, job_id, _reviewer(request, tenant), body.note)
    if not created:
        response.status_code = status.HTTP_200_OK
    return rec.model_dump(mode="json")
