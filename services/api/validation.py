"""Checks of a job spec against this deployment's limits and backends, once, at submission: a 422 that names
the field and the limit. The spec's own format was checked by its schema; stages and backends trust both.
The checks themselves live in `shared/submission.py` (the closed loop's rounds go through them too)."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from dreammask.shared.schemas import JobLimits, JobSpec
from dreammask.shared.settings import Settings
from dreammask.shared.submission import Problem, job_problems


def _err(loc: tuple, msg: str) -> dict:
    return {"loc": ("body", *loc), "msg": msg, "type": "value_error"}


def problems_to_422(problems: list[Problem], prefix: tuple = ()) -> RequestValidationError:
    return RequestValidationError([_err((*prefix, *loc), msg) for loc, msg in problems])


def check_spec(spec: JobSpec, settings: Settings) -> tuple[list[str], JobLimits]:
    """Raise RequestValidationError (422) listing every problem; return the resolved training categories and
    the limits they were checked against (stored with the job)."""
    train, limits, problems = job_problems(spec, settings)
    if problems:
        raise problems_to_422(problems)
    return train, limits
