"""/v1/datasets: a curated dataset's manifest (with a SHA-256 per file), its files and their download links.
Files answer GET and HEAD, with ETag and Range, so clients skip what they have and resume what they lost."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from dreammask.shared import keys
from dreammask.shared.deletion import parse_dataset_id
from dreammask.shared.schemas import DatasetManifest
from dreammask.shared.storage import LocalObjectStore, ObjectNotFound

from ..deps import RuntimeDep, SettingsDep, TenantDep, base_url
from ..errors import V1_ERRORS, responses
from ..streaming import object_response
from ..views import DatasetFile, DatasetView

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=responses(*V1_ERRORS))
_NO_DATASET = {"e404": {"detail": "no dataset 'ds-job-20260101-000000-abcdef'"}}


def owned_manifest(rt, dataset_id: str, tenant: str) -> DatasetManifest:
    """The dataset's manifest if it exists and belongs to the tenant, else 404 (never another's)."""
    try:
        m = rt.store.get_model(keys.dataset_manifest(keys.check_id(dataset_id, "dataset id")), DatasetManifest)
    except (ObjectNotFound, ValueError):
        m = None
    if m is None or m.tenant != tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dataset {dataset_id!r}")
    return m


def owned_job_of_dataset(rt, dataset_id: str, tenant: str) -> str:
    """The job a dataset id names, for the routes of its versions: from the dataset's manifest, or, once
    version 1 (`ds-{job}`) is deleted, from the id itself when the tenant owns that job (its other versions
    are still listed, published and deleted under it). Anything else is a 404, as for a missing dataset."""
    try:
        return owned_manifest(rt, dataset_id, tenant).job_id
    except HTTPException:
        pass
    try:
        job_id, n = parse_dataset_id(dataset_id)
        stored = rt.tracker.spec(job_id) if n == 1 else None
    except (ValueError, LookupError):
        stored = None
    if stored is None or stored.tenant != tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dataset {dataset_id!r}")
    return job_id


@router.get("/{dataset_id}", responses=responses(404, 422, **_NO_DATASET))
def get_dataset(dataset_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep,
                presign: Annotated[bool, Query(description="presigned storage URLs where the store can sign")] = True
                ) -> DatasetView:
    """The manifest (its `checksums` hold a SHA-256 per file path) and every file with a download URL."""
    m = owned_manifest(rt, dataset_id, tenant)
    prefix = keys.dataset_prefix(dataset_id)
    api_root = f"{base_url(request, settings)}/v1/datasets/{dataset_id}/files"
    # Sizes where they cost nothing (a local store); S3 clients read them from HEAD or the response.
    sized = isinstance(rt.store, LocalObjectStore)
    files = []
    for key in rt.store.list(prefix):
        rel = key[len(prefix):]
        url = rt.store.presigned_url(key, settings.presign_expiry_s) if presign else None
        files.append(DatasetFile(path=rel, url=url or f"{api_root}/{rel}", presigned=bool(url),
                                 size=rt.store.size(key) if sized else None))
    return DatasetView(manifest=m, files=files)


_FILE_RESPONSES = {
    200: {"description": "the file (HEAD: its headers only: Content-Length, ETag)",
          "content": {"application/octet-stream": {}}},
    206: {"description": "the requested byte range (`Range: bytes=N-`)", "content": {"application/octet-stream": {}}},
    **responses(404, 416, 422, **_NO_DATASET),
}


@router.get("/{dataset_id}/files/{path:path}", responses=_FILE_RESPONSES, response_class=Response)
@router.head("/{dataset_id}/files/{path:path}", responses=_FILE_RESPONSES, response_class=Response)
def get_dataset_file(dataset_id: str, path: str, request: Request, rt: RuntimeDep, tenant: TenantDep):
    """One file, streamed; ETag, Range and If-Range as for a static file."""
    owned_manifest(rt, dataset_id, tenant)
    try:
        key = keys.dataset_file(dataset_id, path)
    except ValueError as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from None
    return object_response(rt.store, key, request)
