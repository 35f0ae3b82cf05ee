"""POST /v1/jobs/{id}/samples/{sid}/rerender: render a sample again, unchanged or with another seed, steps,
guidance or size, as a re-render job linked to its origin (services/api/rerender.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response, status

from dreammask.shared.schemas import JobView

from .. import errors
from ..deps import RuntimeDep, SettingsDep, TenantDep
from ..rerender import RerenderRequest, rerender_sample
from .jobs import _owned_spec, _view

router = APIRouter(tags=["jobs"], responses=errors.responses(*errors.V1_ERRORS))

_EXAMPLES = {
    "the same image": {"summary": "reproduce the sample (same seed, parameters, size)", "value": {}},
    "another seed": {"summary": "the same layout with another render seed and more steps",
                     "value": {"seed": 1234, "steps": 50}},
}


@router.post("/v1/jobs/{job_id}/samples/{sid}/rerender", status_code=status.HTTP_202_ACCEPTED,
             response_model=JobView, responses=errors.responses(
                 404, 413, 422, e404={"detail": "no rendered sample 's00099' in job j20260101000000abcdef01"},
                 e422={"detail": [{"loc": ["body", "steps"], "type": "value_error",
                                   "msg": "400 steps; this deployment renders with 1 to 200 "
                                          "(DREAMMASK_MIN_SYNTHESIS_STEPS, DREAMMASK_MAX_SYNTHESIS_STEPS)"}]}))
def rerender(job_id: str, sid: str, request: Request, response: Response, rt: RuntimeDep, settings: SettingsDep,
             tenant: TenantDep, body: Annotated[RerenderRequest | None, Body(openapi_examples=_EXAMPLES)] = None):
    """A new job that renders sample `sid` again from its provenance (layout, render seed, parameters), with the
    overrides given, then annotates and curates it like any scene. Its view names the origin (`rerender_of`)."""
    stored = rerender_sample(rt, _owned_spec(rt, job_id, tenant), sid, body or RerenderRequest())
    view = _view(rt, request, settings, stored, detail=False)
    response.headers["Location"] = view.url
    return view
