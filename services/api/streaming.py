"""Serving stored objects through the API (for stores that cannot presign, and for small files)."""

from __future__ import annotations

import mimetypes

from fastapi import HTTPException, status
from fastapi.responses import FileResponse, Response

from dreammask.shared.storage import LocalObjectStore, ObjectNotFound, ObjectStore


def object_response(store: ObjectStore, key: str) -> Response:
    media = mimetypes.guess_type(key)[0] or "application/octet-stream"
    try:
        if isinstance(store, LocalObjectStore):
            return FileResponse(store.local_path(key), media_type=media)
        return Response(store.get_bytes(key), media_type=media)
    except (ObjectNotFound, ValueError):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no object {key.split('/', 2)[-1]!r}") from None
