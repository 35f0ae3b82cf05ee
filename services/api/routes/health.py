"""Liveness, readiness (broker and storage reachable) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from ..deps import RuntimeDep
from ..metrics import render_metrics

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(rt: RuntimeDep):
    checks = {}
    try:
        rt.redis.ping()
        checks["broker"] = "ok"
    except Exception as e:  # noqa: BLE001
        checks["broker"] = f"unreachable: {type(e).__name__}"
    try:
        rt.store.ping()
        checks["storage"] = "ok"
    except Exception as e:  # noqa: BLE001
        checks["storage"] = f"unreachable: {type(e).__name__}: {e}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(status_code=200 if ok else 503, content={"ready": ok, "checks": checks})


@router.get("/metrics")
def metrics(rt: RuntimeDep) -> Response:
    body, content_type = render_metrics(rt)
    return Response(body, media_type=content_type)
