"""Serving stored objects through the API (for stores that cannot presign, and for small files): GET and HEAD,
with an ETag and single-range requests (`Range: bytes=N-`), so clients can skip and resume downloads."""

from __future__ import annotations

import hashlib
import mimetypes
import re

from fastapi import HTTPException, Request, status
from fastapi.responses import FileResponse, Response

from dreammask.shared.storage import LocalObjectStore, ObjectNotFound, ObjectStore

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _ranged(data: bytes, media: str, request: Request | None) -> Response:
    """A stored object held in memory, answering HEAD, If-Range and one byte range like a file response."""
    etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    head = request is not None and request.method == "HEAD"
    spec = request.headers.get("range") if request is not None else None
    if_range = request.headers.get("if-range") if request is not None else None
    if spec and (if_range is None or if_range == etag):
        m = _RANGE_RE.match(spec.strip())
        if m and (m.group(1) or m.group(2)):
            size = len(data)
            if m.group(1):
                start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else size - 1
            else:  # a suffix: the last N bytes
                start, end = max(0, size - int(m.group(2))), size - 1
            end = min(end, size - 1)
            if start >= size or start > end:
                raise HTTPException(416, "Range Not Satisfiable",
                                    headers={"Content-Range": f"bytes */{size}"})
            part = data[start:end + 1]
            headers.update({"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(len(part))})
            return Response(b"" if head else part, status_code=206, media_type=media, headers=headers)
    headers["Content-Length"] = str(len(data))
    return Response(b"" if head else data, media_type=media, headers=headers)


def object_response(store: ObjectStore, key: str, request: Request | None = None) -> Response:
    media = mimetypes.guess_type(key)[0] or "application/octet-stream"
    try:
        if isinstance(store, LocalObjectStore):
            # Starlette's file response streams from disk and answers HEAD, ETag, If-Range and Range itself.
            return FileResponse(store.local_path(key), media_type=media)
        return _ranged(store.get_bytes(key), media, request)
    except (ObjectNotFound, ValueError):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no object {key.split('/', 2)[-1]!r}") from None
