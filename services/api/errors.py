"""The API's error bodies as models, for the OpenAPI document: each route lists the statuses it can answer
with an example of each. The handlers that produce them live with the routes and the API's middleware."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every 4xx/5xx but 422: what went wrong and what to change."""

    detail: str = Field(..., description="what went wrong and what to change")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(..., description='where: e.g. ["body", "backends", "synthesis"]')
    msg: str = Field(..., description="what to change")
    type: str
    input: Any | None = Field(None, description="a short excerpt of the rejected value")


class ValidationErrorBody(BaseModel):
    """422: one item per field to change."""

    detail: list[ValidationIssue]


class UnavailableBody(BaseModel):
    """503: a store or the broker did not answer. Submissions saved before the broker failed say their id."""

    detail: str
    unavailable: str | None = Field(None, description="'broker' or 'storage', when known")
    job_id: str | None = Field(None, description="the saved job: POST /v1/jobs/{id}/resume later")
    training_id: str | None = Field(None, description="the saved training: POST /v1/trainings/{id}/resume later")


class TooManyBody(BaseModel):
    """429: a quota is used up, or too many failed authentications came from this address or key prefix.
    `Retry-After` says when to try again."""

    detail: str
    quota: str | None = Field(None, description="the quota: 'active_jobs', 'scenes_per_day' or 'stored_bytes' "
                                                "(absent for authentication throttling)")
    limit: int | None = None
    used: int | None = None
    retry_after_s: int | None = None


_ERRORS: dict[int, tuple[type[BaseModel], str, dict]] = {
    400: (ErrorBody, "The Host header names a host this API does not serve (DREAMMASK_ALLOWED_HOSTS).",
          {"detail": "unknown Host 'evil.example'; this API answers for the hosts in DREAMMASK_ALLOWED_HOSTS "
                     "and DREAMMASK_PUBLIC_BASE_URL"}),
    401: (ErrorBody, "No API key, or one this deployment does not know (header `Authorization: Bearer <key>`).",
          {"detail": "missing or invalid API key: send 'Authorization: Bearer <key>'"}),
    403: (ErrorBody, "The key is known but may not do this.", {"detail": "this key may not do that"}),
    404: (ErrorBody, "No such resource for this tenant (another tenant's resources are reported the same way).",
          {"detail": "no job 'job-20260101-000000-abcdef'"}),
    409: (ErrorBody, "The resource's state does not allow this now.",
          {"detail": "job job-20260101-000000-abcdef already succeeded; nothing to cancel"}),
    413: (ErrorBody, "The request body is larger than DREAMMASK_MAX_REQUEST_BYTES.",
          {"detail": "the request body is larger than 1048576 bytes; send less (DREAMMASK_MAX_REQUEST_BYTES)"}),
    416: (ErrorBody, "The Range asks for bytes past the end of the file.", {"detail": "Range Not Satisfiable"}),
    422: (ValidationErrorBody, "The request names a field to change: `loc` says where, `msg` what to change.",
          {"detail": [{"loc": ["body", "backends", "synthesis"], "type": "value_error",
                       "msg": "backend 'gligen' is not deployed here; choose one of: preview"}]}),
    429: (TooManyBody, "A quota of the tenant is used up (the body names it), or authentication failed too "
                       "often from this address or with this key prefix; see Retry-After.",
          {"detail": "quota active_jobs exceeded: 10 of this tenant's jobs are not finished and the quota is 10; "
                     "wait for one to finish, or cancel one (DREAMMASK_QUOTA_ACTIVE_JOBS)",
           "quota": "active_jobs", "limit": 10, "used": 10, "retry_after_s": 60}),
    503: (UnavailableBody, "The broker (Redis) or object storage is unavailable; retry later (see Retry-After).",
          {"detail": "object storage is unavailable (StorageError); retry later", "unavailable": "storage"}),
}


def responses(*codes: int, **examples: dict) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: the model, a description and an example per status.
    `examples` overrides an example by status, e.g. `e404={"detail": "no dataset 'x'"}`."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model, description, example = _ERRORS[code]
        example = examples.get(f"e{code}", example)
        out[code] = {"model": model, "description": description,
                     "content": {"application/json": {"example": example}}}
    return out


# What every /v1 route can answer: an unknown Host, no key, authentication throttled, a store or the
# broker down.
V1_ERRORS = (400, 401, 429, 503)
