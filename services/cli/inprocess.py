"""Every stage function in one process, messages delivered in order: the pipeline benchmark's baseline and
a way to run or debug a whole job without a broker or workers."""

from __future__ import annotations

from dreammask.shared.celery_app import TASK_PUBLISH
from dreammask.shared.chain import DEFAULT_CHAIN, Chain
from dreammask.shared.runtime import InProcessDispatcher, Runtime

from ..annotation import stage as annotation
from ..association import stage as association
from ..curation import publish
from ..curation import stage as curation
from ..synthesis import stage as synthesis

# Stage name -> the function its task calls (the same one the Celery task calls).
STAGE_HANDLERS = {
    "association": association.associate,
    "layout": association.plan_layouts,
    "synthesis": synthesis.render_scenes,
    "annotation": annotation.annotate_scenes,
    "curation": curation.curate_scenes,
    "assemble": curation.assemble,
}

# Task name -> function, for the default chain.
STAGE_FUNCTIONS = {DEFAULT_CHAIN[name].task: fn for name, fn in STAGE_HANDLERS.items()}


def in_process_dispatcher(chain: Chain = DEFAULT_CHAIN, extra_handlers: dict | None = None) -> InProcessDispatcher:
    """A dispatcher delivering every stage of `chain`; `extra_handlers` (stage name -> function) adds
    stages that are not built in."""
    handlers = {**STAGE_HANDLERS, **(extra_handlers or {})}
    missing = [st.name for st in chain if st.name not in handlers]
    if missing:
        raise ValueError(f"no in-process handler for stages {missing}")
    d = InProcessDispatcher()
    d.handlers = {st.task: handlers[st.name] for st in chain}
    d.handlers[TASK_PUBLISH] = publish.publish_version  # a reviewed dataset version (outside the chain)
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
