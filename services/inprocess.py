"""Every stage function in one process, messages delivered in order: the pipeline benchmark's baseline and
a way to run or debug a whole job without a broker or workers."""

from __future__ import annotations

from dreammask.shared import celery_app as names
from dreammask.shared.runtime import InProcessDispatcher, Runtime

from .annotation import stage as annotation
from .association import stage as association
from .curation import publish
from .curation import stage as curation
from .synthesis import stage as synthesis

STAGE_FUNCTIONS = {
    names.TASK_ASSOCIATE: association.associate,
    names.TASK_PLAN_LAYOUTS: association.plan_layouts,
    names.TASK_RENDER: synthesis.render_scenes,
    names.TASK_ANNOTATE: annotation.annotate_scenes,
    names.TASK_CURATE: curation.curate,
    names.TASK_PUBLISH: publish.publish_version,
}


def in_process_dispatcher() -> InProcessDispatcher:
    d = InProcessDispatcher()
    d.handlers = dict(STAGE_FUNCTIONS)
    return d


def run_pending(rt: Runtime, until: str | None = None) -> int:
    """Deliver queued messages in order; stop (leaving it queued) at the first message for task `until`."""
    d = rt.dispatcher
    n = 0
    while d.pending:
        name, args = d.pending[0]
        if name == until:
            break
        d.pending.popleft()
        d.handlers[name](rt, *args)
        n += 1
    return n
