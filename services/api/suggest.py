"""'Did you mean …?' for a misspelt field: the 422 handler asks `suggest` about each `extra_forbidden` error and
appends the closest field name the request's schema has at that place (difflib over the model's fields)."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request

from dreammask.shared.suggest import closest


def _models_in(tp: Any, step: Any) -> list[Any]:
    """The types a value at `step` (a field name, list index or dict key) inside `tp` may have."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _models_in(args[0], step)
    if origin is typing.Union or (origin is not None and type(tp).__name__ == "UnionType"):
        return [t for a in args for t in _models_in(a, step)]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        fields = tp.model_fields
        f = fields.get(step) if isinstance(step, str) else None
        if f is None:
            f = next((v for v in fields.values() if v.alias == step), None)
        return [f.annotation] if f is not None else []
    if origin in (list, tuple, set, frozenset, Sequence) and isinstance(step, int):
        return [args[0]] if args else []
    if origin is dict and len(args) == 2:
        return [args[1]]
    return []


def _field_names(tp: Any) -> list[str]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _field_names(args[0])
    if origin is typing.Union or (origin is not None and type(tp).__name__ == "UnionType"):
        return [n for a in args for n in _field_names(a)]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


def _body_type(request: Request) -> Any:
    route = request.scope.get("route")
    field = getattr(route, "body_field", None)
    return field.field_info.annotation if field is not None else None


def closest_field(model: Any, path: Sequence[Any], name: str) -> str | None:
    """The field of `model` at `path` whose name is closest to `name` (None when nothing is close)."""
    types = [model]
    for step in path:
        types = [t for tp in types for t in _models_in(tp, step)]
    names = [n for tp in types for n in _field_names(tp)]
    return closest(name, names)


def suggest(request: Request, error: dict) -> str:
    """The error's message, with "did you mean 'x'?" when it is an unknown field close to a known one."""
    msg = str(error.get("msg", ""))
    loc = list(error.get("loc", ()))
    if error.get("type") != "extra_forbidden" or len(loc) < 2 or loc[0] != "body" or not isinstance(loc[-1], str):
        return msg
    model = _body_type(request)
    if model is None:
        return msg
    # A single body parameter is not embedded: loc is ("body", field, ...) of the model itself.
    match = closest_field(model, loc[1:-1], loc[-1])
    return f"{msg}: did you mean {match!r}?" if match else msg
