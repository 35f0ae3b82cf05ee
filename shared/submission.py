"""Submitting a synthesis job: the checks against this deployment and the record, once, for every way a job
comes in (the API's `POST /v1/jobs`, the closed loop's rounds, re-renders). A job's own format was checked by
its schema (`JobSpec`); what depends on the deployment (its limits, the backends it runs) is checked here."""

from __future__ import annotations

from . import quotas
from .jobs import new_job_id
from .schemas import JobLimits, JobSpec, StoredJobSpec
from .settings import Settings

Problem = tuple[tuple[str | int, ...], str]  # (location in the spec, what to change)


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
