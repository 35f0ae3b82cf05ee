"""DELETE /v1/jobs/{id}, /v1/datasets/{id} and /v1/datasets/{id}/versions/{n} (DELETE /v1/trainings/{id}
lives with the trainings' routes, which an image without the trainer leaves out): the tenant's own
resources only (another tenant's are reported missing, exactly as for reads). What each
removes, and how work still in flight is kept from landing, is in shared/deletion.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, Field

from dreammask.shared import deletion

from .. import reviewing
from ..deps import RuntimeDep, TenantDep
from ..errors import V1_ERRORS, responses
from .datasets import owned_job_of_dataset, owned_manifest
from .jobs import _owned_spec

router = APIRouter(responses=responses(*V1_ERRORS))


class DeletionResult(BaseModel):
    deleted: str = Field(description="'job', 'dataset' or 'training'")
    id: str
    objects: int = Field(description="objects removed from storage now")
    cancelled: bool = Field(description="it was running and was cancelled first")
    pending: bool = Field(False, description="a running training: it is cancelled now and deleted once it "
                                             "stopped (202)")
    job_id: str | None = None
    version: int | None = None


def _who(request: Request, tenant: str) -> str:
    return reviewing.who(tenant, request.headers.get("authorization", "").partition(" ")[2])


@router.delete("/v1/jobs/{job_id}", tags=["jobs"], response_model=DeletionResult,
               responses=responses(404, 422, e404={"detail": "no job 'job-20260101-000000-abcdef'"}))
def delete_job(job_id: str, request: Request, rt: RuntimeDep, tenant: TenantDep):
    """Cancel the job if it is still running, then delete it: its scenes, its dataset and every version of
    it. Work already in flight lands nothing (it is refused, or removed by the supervisor's follow-up)."""
    _owned_spec(rt, job_id, tenant)
    try:
        out = deletion.delete_job(rt, job_id, who=_who(request, tenant))
    except LookupError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id!r}") from None
    return out.as_dict()


_NO_DATASET = {"e404": {"detail": "no dataset 'ds-job-20260101-000000-abcdef'"},
               "e409": {"detail": "version 3 of job j20260101000000abcdef01 is still being assembled; delete it "
                                  "once it is published or failed"}}


def _delete_dataset(rt, request, tenant: str, job_id: str, n: int):
    try:
        out = deletion.delete_version(rt, job_id, n, tenant=tenant, who=_who(request, tenant))
    except deletion.DeletionConflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    return out.as_dict()


@router.delete("/v1/datasets/{dataset_id}", tags=["datasets"], response_model=DeletionResult,
               responses=responses(404, 409, 422, **_NO_DATASET))
def delete_dataset(dataset_id: str, request: Request, rt: RuntimeDep, tenant: TenantDep):
    """Delete one dataset: `ds-{job}` (version 1, as curated; the job and its other versions stay) or a
    published version `ds-{job}-vN`."""
    m = owned_manifest(rt, dataset_id, tenant)
    job_id, n = deletion.parse_dataset_id(dataset_id)
    if job_id != m.job_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dataset {dataset_id!r}")
    return _delete_dataset(rt, request, tenant, job_id, n)


@router.delete("/v1/datasets/{dataset_id}/versions/{version}", tags=["reviews"], response_model=DeletionResult,
               responses=responses(404, 409, 422, **_NO_DATASET))
def delete_version(dataset_id: str, version: Annotated[int, Path(ge=1, le=100_000)], request: Request,
                   rt: RuntimeDep, tenant: TenantDep):
    """Delete version N of a job's dataset (any of its dataset ids names the job); a version still being
    assembled is a 409. Version 1 is the curated dataset itself."""
    job_id = owned_job_of_dataset(rt, dataset_id, tenant)
    if not any(v["version"] == version for v in reviewing.versions(rt, job_id)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {dataset_id} has no version {version}")
    return _delete_dataset(rt, request, tenant, job_id, version)
