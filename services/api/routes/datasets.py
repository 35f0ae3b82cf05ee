"""/v1/datasets: a curated dataset's manifest, its files and their download links."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from dreammask.shared import keys
from dreammask.shared.schemas import DatasetManifest
from dreammask.shared.storage import ObjectNotFound

from ..deps import RuntimeDep, SettingsDep, TenantDep, base_url
from ..streaming import object_response

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def _manifest(rt, dataset_id: str, tenant: str) -> DatasetManifest:
    try:
        m = rt.store.get_model(keys.dataset_manifest(keys.check_id(dataset_id, "dataset id")), DatasetManifest)
    except (ObjectNotFound, ValueError):
        m = None
    if m is None or m.tenant != tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dataset {dataset_id!r}")
    return m


@router.get("/{dataset_id}")
def get_dataset(dataset_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep,
                presign: Annotated[bool, Query(description="presigned storage URLs where the store can sign")] = True
                ) -> dict[str, Any]:
    m = _manifest(rt, dataset_id, tenant)
    prefix = keys.dataset_prefix(dataset_id)
    api_root = f"{base_url(request, settings)}/v1/datasets/{dataset_id}/files"
    files = []
    for key in rt.store.list(prefix):
        rel = key[len(prefix):]
        url = rt.store.presigned_url(key, settings.presign_expiry_s) if presign else None
        files.append({"path": rel, "url": url or f"{api_root}/{rel}", "presigned": bool(url)})
    return {"manifest": m.model_dump(mode="json"), "files": files}


@router.get("/{dataset_id}/files/{path:path}")
def get_dataset_file(dataset_id: str, path: str, rt: RuntimeDep, tenant: TenantDep):
    _manifest(rt, dataset_id, tenant)
    try:
        key = keys.dataset_file(dataset_id, path)
    except ValueError as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from None
    return object_response(rt.store, key)
