"""Every stage in one process, messages delivered in order: the pipeline benchmark's baseline and a way to
run or debug a whole job without a broker or workers. The stages and their work come from the chain's
`StageDef`s (the same handlers the Celery tasks run), so a declared stage runs here with no further edit.
Trainings (`dreammask.training.run`) and closed loops (`dreammask.loop.advance`) run here too, with the same
functions their workers call; `run_loop` ticks a loop as the supervisor would."""

from __future__ import annotations

from functools import partial

from dreammask.shared import quotas
from dreammask.shared.celery_app import TASK_LOOP_ADVANCE, TASK_PUBLISH, TASK_TRAIN
from dreammask.shared.chain import DEFAULT_CHAIN, Chain
from dreammask.shared.runtime import InProcessDispatcher, Runtime
from dreammask.shared.skeleton import run_stage


def _publish(rt: Runtime, job_id: str, version: int) -> dict:
    from ..curation.publish import publish_version

    return publish_version(rt, job_id, version)


def in_process_dispatcher(chain: Chain = DEFAULT_CHAIN, trainer_settings=None) -> InProcessDispatcher:
    """A dispatcher delivering every stage of `chain`, the publishing of reviewed versions, trainings (with
    `trainer_settings`, default TrainerSettings()) and loop advances."""
    d = InProcessDispatcher()
    d.handlers = {st.task: partial(_deliver, st.name) for st in chain}
    d.handlers[TASK_PUBLISH] = _publish  # a reviewed dataset version (outside the chain)
    d.handlers[TASK_TRAIN] = partial(_train, trainer_settings)
    d.handlers[TASK_LOOP_ADVANCE] = _advance_loop
    return d


def _deliver(stage: str, rt: Runtime, job_id: str, scene_ids: list[str] | None = None) -> dict:
    return run_stage(rt, stage, job_id, scene_ids)


def _train(settings, rt: Runtime, training_id: str) -> dict:
    from dreammask.trainer.service.runner import run_training_job
    from dreammask.trainer.service.settings import TrainerSettings

    try:
        return run_training_job(rt.store, training_id, settings or TrainerSettings())
    finally:
        quotas.training_ended(rt.redis, rt.store, training_id)  # as the worker's task does


def _advance_loop(rt: Runtime, loop_id: str) -> dict:
    from ..loop.machine import advance

    return advance(rt, loop_id)


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


def run_loop(rt: Runtime, loop_id: str, max_ticks: int = 200, on_tick=None):
    """Drive a closed loop to its end in this process: deliver every message, then send the loop another
    advance (what the supervisor's sweep does), until it is finished. Returns its final LoopStatus."""
    from dreammask.shared.loops import read_status

    for _ in range(max_ticks):
        run_pending(rt)
        st = read_status(rt.store, loop_id)
        if on_tick is not None:
            on_tick(st)
        if st.state.terminal:
            return st
        rt.dispatcher.send(TASK_LOOP_ADVANCE, loop_id)
    raise RuntimeError(f"loop {loop_id} is still {st.state.value} ({st.step}) after {max_ticks} ticks")
