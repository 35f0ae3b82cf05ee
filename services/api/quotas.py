"""The API's side of the per-tenant quotas (shared/quotas.py): reserve before a job is written, give the
reservation back if writing it failed, and answer a submission over a quota with 429, `Retry-After` and a
body that names the quota."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dreammask.shared import quotas

log = logging.getLogger("dreammask.api")


def reserve_slot(rt, settings, tenant: str, job_id: str) -> None:
    """A job resumed after it ended needs a job slot again (no scenes: they were counted at submission)."""
    lim = quotas.Limits.from_settings(settings)
    quotas.reserve_job(rt.redis, tenant, job_id, 0, 0, quotas.Limits(lim.active_jobs, 0, 0))


def release_slot(rt, tenant: str, job_id: str) -> None:
    quotas.release_job(rt.redis, tenant, job_id)


def check_stored_bytes(rt, settings, tenant: str) -> None:
    quotas.check_stored_bytes(rt.redis, tenant, quotas.Limits.from_settings(settings))


def body(exc: quotas.QuotaExceeded) -> dict:
    return {"detail": exc.message, "quota": exc.quota, "limit": exc.limit, "used": exc.used,
            "retry_after_s": exc.retry_after_s}


# The 429 of the training routes in the OpenAPI document, made by the code that makes the real one.
TRAINING_QUOTA_EXAMPLE = body(quotas.exceeded("active_trainings", 2, quotas.Limits(0, 0, 0, 2), 1, 0.0))


async def _over_quota(request: Request, exc: quotas.QuotaExceeded) -> JSONResponse:
    log.info("%s %s: %s", request.method, request.url.path, exc.message)
    return JSONResponse(status_code=429, headers={"Retry-After": str(exc.retry_after_s)}, content=body(exc))


def install(app: FastAPI) -> None:
    app.add_exception_handler(quotas.QuotaExceeded, _over_quota)
