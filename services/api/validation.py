"""Checks of a job spec against this deployment's limits and backends: a 422 that names the field."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from dreammask.shared.schemas import JobSpec
from dreammask.shared.settings import Settings


def _err(loc: tuple, msg: str) -> dict:
    return {"loc": ("body", *loc), "msg": msg, "type": "value_error"}


def check_spec(spec: JobSpec, settings: Settings) -> list[str]:
    """Raise RequestValidationError (422) listing every problem; return the resolved training categories."""
    from dreammask.shared.vocabulary import PRESETS

    errors = []
    train = spec.train_categories if spec.train_categories is not None else PRESETS[spec.preset]()
    if len(train) > settings.max_train_categories:
        errors.append(_err(("train_categories",),
                           f"{len(train)} categories; this deployment accepts at most {settings.max_train_categories}"))
    for i, name in enumerate(spec.train_categories or []):
        if len(name) > settings.max_category_name_length:
            errors.append(_err(("train_categories", i),
                               f"name is {len(name)} characters; the limit is {settings.max_category_name_length}"))
    if spec.num_novel > settings.max_novel_categories:
        errors.append(_err(("num_novel",), f"at most {settings.max_novel_categories} novel categories per job"))
    if spec.num_scenes > settings.max_scenes_per_job:
        errors.append(_err(("images_per_category",),
                           f"num_novel × images_per_category = {spec.num_scenes} scenes; this deployment accepts "
                           f"at most {settings.max_scenes_per_job} per job"))
    if spec.image_size > settings.max_image_size:
        errors.append(_err(("image_size",), f"at most {settings.max_image_size} pixels"))
    for stage, name in spec.backends.model_dump().items():
        deployed = settings.deployed_backends.get(stage, [])
        if name not in deployed:
            errors.append(_err(("backends", stage),
                               f"backend {name!r} is not deployed here; choose one of: {', '.join(deployed) or 'none'}"))
    if errors:
        raise RequestValidationError(errors)
    return list(train)
