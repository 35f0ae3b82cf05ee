"""Liveness, readiness (broker and storage answer within the deadline) and Prometheus metrics."""

from __future__ import annotations

import hmac
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from .. import throttle
from ..deps import RuntimeDep, SettingsDep
from ..metrics import render_metrics
from ..probes import quick_redis

router = APIRouter(tags=["health"])

# The whole readiness answer comes within this many seconds, whatever the stores do.
READY_DEADLINE_S = 1.5
_checks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")
_in_flight: dict[str, Future] = {}
_lock = threading.Lock()
def _submit(name: str, fn) -> Future:
    # A probe stuck on a stalled store is not started again: the next readyz reports it still waiting.
    with _lock:
        fut = _in_flight.get(name)
        if fut is None or fut.done():
            fut = _in_flight[name] = _checks.submit(fn)
        return fut


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(rt: RuntimeDep):
    probes = {"broker": _submit(f"broker:{id(rt)}", lambda: quick_redis(rt).ping()),
              "storage": _submit(f"storage:{id(rt)}", rt.store.ping)}
    wait(list(probes.values()), timeout=READY_DEADLINE_S)
    checks = {}
    for name, fut in probes.items():
        if not fut.done():
            checks[name] = f"unreachable: no answer within {READY_DEADLINE_S:g} s"
        elif fut.exception() is not None:
            e = fut.exception()
            checks[name] = f"unreachable: {type(e).__name__}: {str(e)[:200]}"
        else:
            checks[name] = "ok"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(status_code=200 if ok else 503, content={"ready": ok, "checks": checks})


@router.get("/metrics")
def metrics(request: Request, rt: RuntimeDep, settings: SettingsDep,
            authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> Response:
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not token:
        raise HTTPException(404, "metrics are off: set DREAMMASK_METRICS_TOKEN and scrape with that bearer token")
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    addr = throttle.client_addr(request.scope)
    wait = throttle.locked_for(rt.redis, addr) if given else 0
    if not wait and scheme.lower() == "bearer" and hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), token.encode()):
        body, content_type = render_metrics(rt)
        return Response(body, media_type=content_type)
    if given and not wait:
        wait = throttle.failed(rt.redis, settings, addr, given, "metrics", request.url.path)
    if wait:
        throttle.throttled("metrics")
        raise HTTPException(429, throttle.Throttled(wait).detail, headers={"Retry-After": str(wait)})
    raise HTTPException(401, "send 'Authorization: Bearer <DREAMMASK_METRICS_TOKEN>'",
                        headers={"WWW-Authenticate": "Bearer"})
