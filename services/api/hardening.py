"""What stands between the network and the routes: authentication and a size limit before any body is
read, lone surrogates refused, and error handlers that never answer 5xx for bad input (a store that is
down is a 503 with its reason, a validation error a 422 quoting only a short excerpt of the input)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import redis
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dreammask.shared.jobs import JobNotFound
from dreammask.shared.settings import Settings
from dreammask.shared.storage import StorageError

from .deps import AUTHENTICATED_TENANT, authenticate
from .suggest import suggest

log = logging.getLogger("dreammask.api")

EXCERPT_CHARS = 80
# Integers past 64 bits are refused at parse: no field of the API needs them, and storage, numpy and
# Redis would each fail on them differently.
MAX_JSON_INT = 2**63 - 1
_BODY_METHODS = {"POST", "PUT", "PATCH"}
RETRY_AFTER_S = "5"
# What an unreachable broker or object store raises: a 503 with Retry-After, never a 500.
STORE_ERRORS = (redis.RedisError, StorageError, ConnectionError, TimeoutError)


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> Any:
    """A JSON-safe, short stand-in for a piece of client input (lone surrogates escaped, non-finite and
    very long numbers as text)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return value if abs(value) <= MAX_JSON_INT else f"{str(value)[:20]}… ({len(str(abs(value)))} digits)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True, default=str)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _safe_loc(loc) -> list:
    return [p if isinstance(p, int) else excerpt(str(p), 40) for p in loc]


def _lone_surrogate_path(obj: Any, path: tuple = ()) -> tuple | None:
    if isinstance(obj, str):
        return path if any(0xD800 <= ord(c) <= 0xDFFF for c in obj) else None
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = _lone_surrogate_path(k, (*path, "<key>")) or _lone_surrogate_path(v, (*path, k))
            if hit is not None:
                return hit
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            hit = _lone_surrogate_path(v, (*path, i))
            if hit is not None:
                return hit
    return None


class _Refused:
    """Stands for a number JSON cannot carry faithfully, found while parsing (see `parse_json`)."""

    def __init__(self, text: str, kind: str, msg: str):
        self.text, self.kind, self.msg = text, kind, msg


def _parse_constant(name: str) -> _Refused:
    return _Refused(name, "finite_number", f"{name} is not a number JSON allows; send a finite number")


def _parse_float(text: str):
    value = float(text)
    if math.isfinite(value):
        return value
    return _Refused(text, "finite_number", f"{excerpt(text, 40)} is out of range for a number (it overflows "
                                           "to infinity); send a finite number")


def _parse_int(text: str):
    digits = text.lstrip("-")
    if len(digits) > 19 or abs(int(text)) > MAX_JSON_INT:
        return _Refused(text, "int_too_large", f"integer of {len(digits)} digits is out of range; send a number "
                                               f"between -{MAX_JSON_INT} and {MAX_JSON_INT}")
    return int(text)


def parse_json(body: bytes) -> Any:
    """json.loads, with NaN, Infinity, numbers that overflow a float and integers past 64 bits replaced by
    markers (`_Refused`) that `_refused_path` finds: they are refused with a 422 naming their field before
    any model sees them (a model would accept some, and their echo would break the error body)."""
    return json.loads(body, parse_constant=_parse_constant, parse_float=_parse_float, parse_int=_parse_int)


def _refused_path(obj: Any, path: tuple = ()) -> tuple[tuple, _Refused] | None:
    if isinstance(obj, _Refused):
        return path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = _refused_path(v, (*path, k))
            if hit is not None:
                return hit
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            hit = _refused_path(v, (*path, i))
            if hit is not None:
                return hit
    return None


def parsed_as_json(content_types: list[str]) -> bool:
    """Whether FastAPI may read a body sent with these Content-Type values (every one the request carries)
    as JSON, erring towards yes: it does without a Content-Type or with an empty one, and for any
    `application/json` or `application/<anything>+json` in any case and with any parameters (charset...).
    The gate must look at every body FastAPI parses, or NaN gets past it under another spelling of the
    type; a body it scans needlessly is only refused when it holds what no route accepts anyway."""
    if not content_types or not content_types[0].strip():
        return True
    return any("json" in v.lower() for v in content_types)


def _json(status: int, content: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=content, headers=headers)


class GateMiddleware:
    """Pure ASGI, so it runs before FastAPI reads the body: 401 for a body-carrying request under /v1
    without a valid key (429 while its address or key prefix is throttled), 413 past `max_request_bytes` (by Content-Length, or counted while reading),
    422 for JSON holding a lone UTF-16 surrogate (it cannot be stored as UTF-8)."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        content_types = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"content-type"]
        if scope["path"].startswith("/v1/"):
            rt = scope["app"].state.runtime
            try:
                tenant = await run_in_threadpool(authenticate, rt, self.settings, scope, headers.get("authorization"))
            except HTTPException as e:
                return await _json(e.status_code, {"detail": e.detail}, e.headers)(scope, receive, send)
            scope.setdefault("state", {})[AUTHENTICATED_TENANT] = tenant
        limit = self.settings.max_request_bytes
        too_large = _json(413, {"detail": f"the request body is larger than {limit} bytes; send less "
                                          f"(DREAMMASK_MAX_REQUEST_BYTES)"})
        try:
            declared = int(headers.get("content-length", "0") or 0)
        except ValueError:
            return await _json(400, {"detail": "Content-Length is not a number"})(scope, receive, send)
        if declared > limit:
            return await too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and parsed_as_json(content_types):
            try:
                parsed = parse_json(body)
            except (ValueError, RecursionError):
                parsed = None  # FastAPI answers 422 for malformed JSON
            refused = _refused_path(parsed) if parsed is not None else None
            if refused is not None:
                loc, bad = refused
                return await _json(422, {"detail": [{
                    "loc": ["body", *_safe_loc(loc)], "type": bad.kind, "msg": bad.msg,
                    "input": excerpt(bad.text, 40)}]})(scope, receive, send)
            loc = _lone_surrogate_path(parsed) if parsed is not None else None
            if loc is not None:
                return await _json(422, {"detail": [{
                    "loc": ["body", *_safe_loc(loc)], "type": "unicode_error",
                    "msg": "the string holds a lone UTF-16 surrogate (e.g. \\ud800); send valid Unicode text",
                }]})(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def header_bytes(scope) -> int:
    """The request's header block as sent: each name and value, with ": " and its line end."""
    return sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))


class HeaderLimitMiddleware:
    """431 for a request whose headers pass `max_header_bytes` (DREAMMASK_MAX_HEADER_BYTES), before anything
    reads them: large cookies or forged headers would otherwise cost every layer behind it (the host check,
    authentication, the routes) memory and time. The API's HTTP protocol (server.py) cuts headers that
    never end; this answers those that do end, under any server."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.limit = settings.max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = header_bytes(scope)
            if size > self.limit:
                log.warning("%s %s: request headers of %d bytes refused (limit %d)", scope.get("method"),
                            excerpt(scope.get("path", ""), 80), size, self.limit)
                return await _json(431, {"detail": header_limit_message(size, self.limit)})(scope, receive, send)
        return await self.app(scope, receive, send)


def header_limit_message(size: int | None, limit: int) -> str:
    what = f"are {size} bytes" if size is not None else "did not end"
    return (f"the request headers {what}, more than this API accepts ({limit} bytes, "
            f"DREAMMASK_MAX_HEADER_BYTES); send fewer or shorter headers (a client sending large cookies: "
            f"clear this site's cookies)")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = []
    for e in exc.errors():
        try:
            item = {"loc": _safe_loc(e.get("loc", ())), "msg": excerpt(suggest(request, e), 300),
                    "type": str(e.get("type", "value_error"))}
            if "input" in e:
                item["input"] = excerpt(e["input"])
            json.dumps(item, allow_nan=False)
        except Exception:  # noqa: BLE001 - the echo of an input must never turn a 422 into a 500
            item = {"loc": ["body"], "msg": "invalid input (it could not be echoed)", "type": "value_error"}
        detail.append(item)
    return _json(422, {"detail": detail})


async def store_down(request: Request, exc: Exception) -> JSONResponse:
    broker = isinstance(exc, (redis.RedisError, ConnectionError, TimeoutError)) and not isinstance(exc, StorageError)
    which = "the broker (Redis)" if broker else "object storage"
    log.warning("%s %s: %s unavailable: %s", request.method, request.url.path, which, exc)
    return _json(503, {"detail": f"{which} is unavailable ({type(exc).__name__}); retry later",
                       "unavailable": "broker" if broker else "storage"},
                 {"Retry-After": RETRY_AFTER_S})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, STORE_ERRORS):
        return await store_down(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _json(500, {"detail": f"internal error ({type(exc).__name__}); it was logged"})


async def _job_gone(request: Request, exc: JobNotFound) -> JSONResponse:
    # A job deleted while another API process still held its spec in cache: as missing as any other.
    return _json(404, {"detail": f"no job {excerpt(str(exc.args[0]) if exc.args else '', 60)!r}"})


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, (str, dict, list)) else str(exc.detail)
    return _json(exc.status_code, {"detail": detail}, getattr(exc, "headers", None))


def install(app: FastAPI, settings: Settings) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(JobNotFound, _job_gone)
    for error in STORE_ERRORS:
        app.add_exception_handler(error, store_down)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(GateMiddleware, settings=settings)
