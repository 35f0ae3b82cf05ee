"""What a stage function needs, built once per process: settings, storage, Redis, job tracker, dispatcher."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .chain import DEFAULT_CHAIN, Chain
from .jobs import JobTracker
from .settings import Settings, get_settings
from .storage import ObjectStore, store_from_settings


class Dispatcher:
    """Sends the next stage's task. Messages are task names with JSON args: ids and keys only."""

    def send(self, task_name: str, *args: Any) -> None:
        raise NotImplementedError


class CeleryDispatcher(Dispatcher):
    def __init__(self, app):
        self.app = app

    def send(self, task_name: str, *args: Any) -> None:
        from .celery_app import queue_of

        self.app.send_task(task_name, args=list(args), queue=queue_of(task_name), routing_key=queue_of(task_name))


class InProcessDispatcher(Dispatcher):
    """Runs the stage functions in this process, in message order: the baseline the pipeline benchmark
    compares the platform against, and a way to run a whole job in one process."""

    def __init__(self):
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.pending: deque[tuple[str, tuple]] = deque()

    def send(self, task_name: str, *args: Any) -> None:
        self.pending.append((task_name, args))

    def run(self, runtime: Runtime) -> int:
        n = 0
        while self.pending:
            name, args = self.pending.popleft()
            self.handlers[name](runtime, *args)
            n += 1
        return n


@dataclass
class Runtime:
    settings: Settings
    store: ObjectStore
    redis: redis.Redis
    tracker: JobTracker
    dispatcher: Dispatcher

    @property
    def chain(self) -> Chain:
        return self.tracker.chain


_runtime: Runtime | None = None
_lock = threading.Lock()


def build_runtime(settings: Settings | None = None, dispatcher: Dispatcher | None = None,
                  store: ObjectStore | None = None, chain: Chain = DEFAULT_CHAIN,
                  guard_cancelled: bool = False) -> Runtime:
    """`guard_cancelled` (the workers): writes of a cancelled job's outputs are refused (guarded_store.py)."""
    s = settings or get_settings()
    store = store or store_from_settings(s)
    r = redis.Redis.from_url(s.redis_url, socket_timeout=10, socket_connect_timeout=5,
                             health_check_interval=30)
    if dispatcher is None:
        from .celery_app import create_celery_app

        dispatcher = CeleryDispatcher(create_celery_app(s))
    tracker = JobTracker(store, r, chain=chain, keys_ttl_s=s.job_keys_ttl_s)
    if guard_cancelled:
        from .guarded_store import CancelGuardStore

        store = CancelGuardStore(store, tracker.is_cancelled)
        tracker.store = store
    return Runtime(settings=s, store=store, redis=r, tracker=tracker, dispatcher=dispatcher)


def get_runtime() -> Runtime:
    """The process-wide runtime, built on first use (in a worker: after the fork, never before)."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = build_runtime(guard_cancelled=True)
    return _runtime


def set_runtime(rt: Runtime | None) -> None:
    global _runtime
    _runtime = rt
