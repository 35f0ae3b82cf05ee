"""The Celery app factory: JSON only, late acks, one queue per service, names `dreammask.<service>.<verb>`."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from .chain import DEFAULT_CHAIN

# One queue per service: those of the chain's stages (their task names come from the chain's `StageDef`s),
# and those of the training service and of the closed loop, which run outside the chain.
QUEUES = (*DEFAULT_CHAIN.services, "training", "loop")

# Tasks outside the chain, sent by name (services never import each other).
TASK_PUBLISH = "dreammask.curation.publish"  # a reviewed dataset version (not part of the chain)
TASK_TRAIN = "dreammask.training.run"
TASK_LOOP_ADVANCE = "dreammask.loop.advance"  # a closed loop's next step (services/loop/, docs/loop.md)


def queue_of(task_name: str) -> str:
    parts = task_name.split(".")
    if len(parts) != 3 or parts[0] != "dreammask" or parts[1] not in QUEUES:
        raise ValueError(f"task name {task_name!r} is not dreammask.<service>.<verb>")
    return parts[1]


def create_celery_app(settings=None, name: str = "dreammask") -> Celery:
    from .settings import get_settings

    s = settings or get_settings()
    app = Celery(name, broker=s.redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        # A task is acknowledged only when it finished; a worker lost mid-task gets it redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Every worker looks for messages whose lease lapsed every 10 s (kombu's default scans only on every
        # 10th sweep, about every 100 s, which would add up to 100 s to a lost worker's redelivery).
        broker_transport_options={"visibility_timeout": s.visibility_timeout_s,
                                  "unacked_restore_interval": 10, "unacked_restore_throttle": 1},
        task_time_limit=s.task_time_limit_s,
        task_soft_time_limit=max(1, s.task_time_limit_s - 30),
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        task_default_queue="curation",
        task_routes={f"dreammask.{q}.*": {"queue": q, "routing_key": q} for q in QUEUES},
        task_create_missing_queues=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app
