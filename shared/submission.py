"""Submitting a synthesis job: the checks against this deployment and the record, once, for every way a job
comes in (the API's `POST /v1/jobs`, the closed loop's rounds, re-renders). A job's own format was checked by
its schema (`JobSpec`); what depends on the deployment (its limits, the backends it runs) is checked here.
Starting a training (the API's `POST /v1/trainings`, evaluations and resumes, a loop round's training) takes
the tenant's training quota here too."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TypeVar

from . import quotas
from .jobs import new_job_id
from .schemas import JobLimits, JobSpec, StoredJobSpec
from .settings import Settings

Problem = tuple[tuple[str | int, ...], str]  # (location in the spec, what to change)
T = TypeVar("T")
log = logging.getLogger("dreammask.submission")


class SubmissionRejected(ValueError):
    """The spec breaks this deployment's limits or names backends it does not run; `problems` says where."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(f"{'.'.join(str(x) for x in loc) or 'job'}: {msg}" for loc, msg in problems))


def job_problems(spec: JobSpec, settings: Settings) -> tuple[list[str], JobLimits, list[Problem]]:
    """(resolved training categories, the limits in force, every problem: [] when the job may run)."""
    from .vocabulary import PRESETS

    train = list(spec.train_categories if spec.train_categories is not None else PRESETS[spec.preset]())
    limits = settings.job_limits()
    problems: list[Problem] = list(limits.violations(spec, train))
    both = sorted({"num_novel", "images_per_category"} & spec.model_fields_set) if spec.category_budget else []
    if both:  # as submitted (a stored spec carries every field)
        problems.append((("category_budget",), f"give category_budget or {' and '.join(both)}, not both: the budget "
                                               "names the categories and their image counts"))
    for stage, name in spec.backends.model_dump().items():
        deployed = settings.deployed_backends.get(stage, [])
        if name not in deployed:
            problems.append((("backends", stage),
                             f"backend {name!r} is not deployed here; choose one of: {', '.join(deployed) or 'none'}"))
    return train, limits, problems


def create_job(rt, spec: JobSpec, tenant: str, *, job_id: str | None = None, **extra) -> StoredJobSpec:
    """Check the spec against this deployment (SubmissionRejected), reserve it in the tenant's quotas
    (quotas.QuotaExceeded) and store the job (queued; not yet sent). Every way a job comes in counts against
    the same quotas: a loop round or a re-render is a job like any other."""
    train, limits, problems = job_problems(spec, rt.settings)
    if problems:
        raise SubmissionRejected(problems)
    job_id = job_id or new_job_id()
    quotas.reserve_new_job(rt, tenant, job_id, spec)
    try:
        return rt.tracker.create(spec, tenant, train, limits, job_id=job_id, **extra)
    except BaseException:
        quotas.give_back_new_job(rt, tenant, job_id, spec)
        raise


def new_training_id() -> str:
    return f"tr-{uuid.uuid4().hex[:12]}"


def start_training(rt, tenant: str, write: Callable[[str], T], *, training_id: str | None = None,
                   new_data: bool = True) -> T:
    """Take a slot of the tenant's training quota for the training, then `write(training_id)` its record (or
    its resumed status). Raises quotas.QuotaExceeded (the API answers 429, a loop round waits) when the
    tenant's unfinished trainings fill the quota, or, for a new training (`new_data`), when its stored bytes
    do. A slot taken here is given back if `write` fails. Reserved before anything is written, so two concurrent
    submissions cannot both take the last slot."""
    lim = quotas.Limits.from_settings(rt.settings)
    if new_data:
        quotas.check_stored_bytes(rt.redis, tenant, lim)
    training_id = training_id or new_training_id()
    taken = quotas.reserve_training(rt.redis, tenant, training_id, lim, store=rt.store)
    try:
        return write(training_id)
    except BaseException:
        if not taken:
            raise  # the slot was the training's before (a lost one resumed): it keeps it
        try:
            quotas.release_training(rt.redis, tenant, training_id)
        except Exception:  # noqa: BLE001 - Redis away too: the slot is reclaimed once the quota is full
            log.warning("could not give back the training slot of %s", training_id)
        raise


def training_stopped(rt, tenant: str, training_id: str) -> None:
    """The training turned terminal outside the worker (cancelled while queued, not enqueued): its slot
    frees."""
    quotas.release_training(rt.redis, tenant, training_id)
