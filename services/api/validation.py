"""Checks of a job spec against this deployment's limits and backends, once, at submission: a 422 that names
the field and the limit. The spec's own format was checked by its schema; stages and backends trust both."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from dreammask.shared.schemas import JobLimits, JobSpec
from dreammask.shared.settings import Settings


def _err(loc: tuple, msg: str) -> dict:
    return {"loc": ("body", *loc), "msg": msg, "type": "value_error"}


def check_spec(spec: JobSpec, settings: Settings) -> tuple[list[str], JobLimits]:
    """Raise RequestValidationError (422) listing every problem; return the resolved training categories and
    the limits they were checked against (stored with the job)."""
    from dreammask.shared.vocabulary import PRESETS

    train = spec.train_categories if spec.train_categories is not None else PRESETS[spec.preset]()
    limits = settings.job_limits()
    errors = [_err(loc, msg) for loc, msg in limits.violations(spec, train)]
    for stage, name in spec.backends.model_dump().items():
        deployed = settings.deployed_backends.get(stage, [])
        if name not in deployed:
            errors.append(_err(("backends", stage),
                               f"backend {name!r} is not deployed here; choose one of: {', '.join(deployed) or 'none'}"))
    if errors:
        raise RequestValidationError(errors)
    return list(train), limits
