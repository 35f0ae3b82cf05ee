"""Every stage in one process, messages delivered in order: the pipeline benchmark's baseline and a way to
run or debug a whole job without a broker or workers. The stages and their work come from the chain's
`StageDef`s (the same handlers the Celery tasks run), so a declared stage runs here with no further edit."""

from __future__ import annotations

from functools import partial

from dreammask.shared.celery_app import TASK_PUBLISH
from dreammask.shared.chain import DEFAULT_CHAIN, Chain
from dreammask.shared.runtime import InProcessDispatcher, Runtime
from dreammask.shared.skeleton import run_stage


def _publish(rt: Runtime, job_id: str, version: int) -> dict:
    from ..curation.publish import publish_version

    return publish_version(rt, job_id, version)


def in_process_dispatcher(chain: Chain = DEFAULT_CHAIN) -> InProcessDispatcher:
    """A dispatcher delivering every stage of `chain`, and the publishing of reviewed versions."""
    d = InProcessDispatcher()
    d.handlers = {st.task: partial(_deliver, st.name) for st in chain}
    d.handlers[TASK_PUBLISH] = _publish  # a reviewed dataset version (outside the chain)
    return d


def _deliver(stage: str, rt: Runtime, job_id: str, scene_ids: list[str] | None = None) -> dict:
    return run_stage(rt, stage, job_id, scene_ids)


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
