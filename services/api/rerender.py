"""Re-rendering a sample (docs/ui.md, "Re-render"): a *re-render job*, a job of its own with one scene that
renders the origin sample's layout again, with the origin's render seed and parameters unless the request
overrides them, then annotates and curates it like any scene (its dataset is `ds-{new job}`).

Why a job of its own rather than a new scene in the origin's job: the origin's plan is written once and its
dataset is published; a new job keeps both untouched, goes through every stage's claim check and idempotent
output keys unchanged, and is followed, reviewed and downloaded like any job. The link runs both ways: the
new job's stored spec and every record of its scene name the origin (`rerender_of`, `RenderRecord.origin`,
`PlannedScene.origin`), and the origin keeps a marker per re-render (`jobs/{job}/rerenders/{scene}/{new}`).

Unchanged, it reproduces the origin's pixels on the same device and backends: same layout, same render
seed, same parameters and size; the render records pin the package versions and weight hashes to compare."""

from __future__ import annotations

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dreammask.shared import keys
from dreammask.shared import orchestration as orch
from dreammask.shared.schemas import JobPlan, JobSpec, RenderRecord, RerenderOrigin, StoredJobSpec
from dreammask.shared.submission import SubmissionRejected, create_job

# Where a problem in the derived job's spec came from, in the request's terms.
_LOC = {("image_size",): ("image_size",), ("synthesis", "steps"): ("steps",),
        ("synthesis", "guidance_scale"): ("guidance_scale",)}


class RerenderRequest(BaseModel):
    """What to change; every field left out keeps the origin's value (nothing at all: the same image)."""

    model_config = ConfigDict(extra="forbid")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="render seed (default: the origin's)")
    steps: int | None = Field(None, description="denoising steps (default: the origin's)")
    guidance_scale: float | None = Field(None, allow_inf_nan=False, description="classifier-free guidance "
                                         "(default: the origin's)")
    image_size: int | None = Field(None, description="side in pixels, a multiple of 8 (default: the origin's)")

    def overrides(self) -> dict:
        return self.model_dump(exclude_none=True)


def _err(loc: tuple, msg: str) -> dict:
    return {"loc": ("body", *loc), "msg": msg, "type": "value_error"}


def rerender_sample(rt, origin: StoredJobSpec, sid: str, req: RerenderRequest) -> StoredJobSpec:
    """Create and start the re-render job of sample `sid` of job `origin` (owned by the caller: checked by the
    route). 404 when the sample was never rendered; 422 naming the field when an override breaks the job
    spec's format or this deployment's limits (those of POST /v1/jobs)."""
    job_id = origin.job_id
    try:
        keys.check_id(sid, "scene id")
        record = rt.store.get_model(keys.render_record(job_id, sid), RenderRecord)
        rt.store.get_model(keys.plan(job_id), JobPlan).scene(sid)
        if not rt.store.exists(keys.layout(job_id, sid)):
            raise LookupError(sid)
    except (ValueError, LookupError):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no rendered sample {sid!r} in job {job_id}") from None
    spec = origin.spec
    synthesis = {**(record.synthesis or spec.synthesis).model_dump(),
                 **{k: v for k, v in (("steps", req.steps), ("guidance_scale", req.guidance_scale)) if v is not None}}
    fields = spec.model_dump(mode="json", exclude={"num_novel", "images_per_category", "category_budget", "name",
                                                   "synthesis", "image_size", "schema_version"}, exclude_none=True)
    try:  # validated as a job spec from JSON is: the overrides meet the same field checks
        derived = JobSpec(**fields, name=f"re-render of {job_id}/{sid}"[:200], num_novel=1, images_per_category=1,
                          image_size=req.image_size or record.width, synthesis=synthesis)
    except ValidationError as e:
        raise RequestValidationError([_err(_LOC.get(tuple(x["loc"]), tuple(x["loc"])), x["msg"])
                                      for x in e.errors()]) from None
    link = RerenderOrigin(job_id=job_id, scene_id=sid, render_seed=record.seed if req.seed is None else req.seed,
                          overrides=req.overrides())
    try:
        stored = create_job(rt, derived, origin.tenant, rerender_of=link)
    except SubmissionRejected as e:
        raise RequestValidationError([_err(_LOC.get(tuple(loc), tuple(loc)), msg) for loc, msg in e.problems]) from None
    rt.store.put_bytes(keys.rerender_marker(job_id, sid, stored.job_id), b"")
    orch.start(rt, stored.job_id)
    return stored


def rerenders_of(rt, job_id: str, sid: str) -> list[str]:
    """The re-render jobs made from a sample, oldest first."""
    prefix = keys.rerenders_prefix(job_id, sid)
    return sorted(k[len(prefix):] for k in rt.store.list(prefix))
