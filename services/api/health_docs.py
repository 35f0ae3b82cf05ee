"""OpenAPI responses of the health routes (/readyz, /metrics), added to the generated document so the routes'
module keeps only their behaviour. Schemas are inlined: these models hold no nested models."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field

from .errors import ErrorBody


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(..., description="'ok' or 'unreachable: <reason>' for the broker and storage")


def _json(model: type[BaseModel], description: str, example: dict) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": model.model_json_schema(), "example": example}}}


HEALTH_RESPONSES = {
    "/readyz": {
        200: _json(Readiness, "the broker and storage answer", {"ready": True, "checks": {"broker": "ok",
                                                                                        "storage": "ok"}}),
        503: _json(Readiness, "the broker or storage does not answer: take this replica out of service",
                   {"ready": False, "checks": {"broker": "ok", "storage": "unreachable: StorageError: ..."}}),
    },
    "/metrics": {
        401: _json(ErrorBody, "the metrics token is missing or wrong (Authorization: Bearer <token>)",
                   {"detail": "send 'Authorization: Bearer <DREAMMASK_METRICS_TOKEN>'"}),
        404: _json(ErrorBody, "metrics are off on this deployment (no DREAMMASK_METRICS_TOKEN)",
                   {"detail": "metrics are off: set DREAMMASK_METRICS_TOKEN and scrape with that bearer token"}),
        429: _json(ErrorBody, "too many wrong tokens from this address (see Retry-After)",
                   {"detail": "too many failed authentication attempts from this address or with this key; "
                              "retry in 30 s"}),
    },
}


def document(app: FastAPI) -> None:
    """Add the responses above to the generated document (once; FastAPI caches the document)."""
    generate = app.openapi

    def openapi() -> dict:
        cached = app.openapi_schema is not None
        schema = generate()
        if not cached:
            for path, extra in HEALTH_RESPONSES.items():
                for op in schema.get("paths", {}).get(path, {}).values():
                    op["responses"].update({str(code): body for code, body in extra.items()})
        return schema

    app.openapi = openapi
