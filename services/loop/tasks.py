"""The loop's one task, thin: `dreammask.loop.advance [loop_id]` takes the loop's next steps (machine.py)."""

from __future__ import annotations

import celery
from celery import shared_task

from dreammask.shared.celery_app import TASK_LOOP_ADVANCE
from dreammask.shared.tasks import TRANSIENT_ERRORS


class AdvanceTask(celery.Task):
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    # A store or the broker away: a few retries, then the supervisor's next sweep sends the loop another message.
    autoretry_for = TRANSIENT_ERRORS
    max_retries = 3
    retry_backoff = 2
    retry_backoff_max = 30


@shared_task(name=TASK_LOOP_ADVANCE, base=AdvanceTask, bind=True)
def advance(self, loop_id: str) -> dict:
    from dreammask.shared.runtime import get_runtime

    from .machine import advance as advance_loop

    return advance_loop(get_runtime(), loop_id)
