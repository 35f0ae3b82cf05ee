"""Leases on the message a worker is running: while a task runs, a thread in its process keeps the
message's entry in the broker's unacked index fresh. The visibility timeout can then be short (60 s by
default) without Redis redelivering long tasks that are alive, and a message whose worker died (no more
renewals) goes back to its queue one visibility timeout after the last renewal, not after hours.

A lease ends at its task's time limit too. The prefork pool kills a task there; a threads pool (the GPU
annotation worker's, docs/annotation.md) cannot, so a task hung past its limit stops renewing and its
message goes back to the queue as if its worker had died. Stages are idempotent, so a slow task that
does finish afterwards only rewrites what the redelivered one writes."""

from __future__ import annotations

import logging
import threading
import time

import redis

log = logging.getLogger(__name__)

# kombu's Redis transport: delivery tag -> delivery time; messages older than the visibility timeout are
# restored to their queue by any worker.
UNACKED_INDEX = "unacked_index"


class Lease:
    def __init__(self, client: redis.Redis, delivery_tag: str, every_s: float, index_key: str = UNACKED_INDEX,
                 limit_s: float | None = None):
        self.client = client
        self.tag = delivery_tag
        self.every_s = every_s
        self.index_key = index_key
        self.limit_s = limit_s  # no renewal after this many seconds (the task's time limit); None: none
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{delivery_tag[:8]}", daemon=True)

    def renew(self) -> bool:
        # XX: only an entry that still exists is touched; an acked or restored message is left alone.
        try:
            self.client.zadd(self.index_key, {self.tag: time.time()}, xx=True)
            return True
        except redis.RedisError as e:  # the broker is away; renew again next time
            log.warning("could not renew the lease of %s: %s", self.tag, e)
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.limit_s is not None and time.monotonic() - self._started >= self.limit_s:
                log.warning("the task of message %s ran past its time limit (%.0f s): its lease lapses and the "
                            "broker will redeliver it", self.tag, self.limit_s)
                return
            self.renew()

    def start(self) -> Lease:
        self.renew()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


_leases: dict[str, Lease] = {}


def on_task_start(task, client: redis.Redis, every_s: float, limit_s: float | None = None) -> None:
    """Celery `task_prerun`: start renewing the running message's lease (Redis broker only), until the
    task's time limit `limit_s`."""
    tag = (getattr(task.request, "properties", None) or {}).get("delivery_tag")
    task_id = task.request.id
    if tag and task_id and getattr(task, "acks_late", False):
        _leases[task_id] = Lease(client, str(tag), every_s, limit_s=limit_s).start()


def on_task_end(task_id: str | None) -> None:
    lease = _leases.pop(task_id, None) if task_id else None
    if lease is not None:
        lease.stop()
