"""A job spec's problems with this deployment (its limits, the backends it runs) as the API's 422, naming the
field and the limit. The checks live in `shared/submission.py`, which every job goes through (the API, the
closed loop's rounds, re-renders); the spec's own format was checked by its schema, and stages and backends
trust both."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from dreammask.shared.submission import Problem


def _err(loc: tuple, msg: str) -> dict:
    return {"loc": ("body", *loc), "msg": msg, "type": "value_error"}


def problems_to_422(problems: list[Problem], prefix: tuple = ()) -> RequestValidationError:
    return RequestValidationError([_err((*prefix, *loc), msg) for loc, msg in problems])
