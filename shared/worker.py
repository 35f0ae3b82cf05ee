"""Worker process bootstrap: models load once per process after the fork, a heartbeat file tells the
health check the process is ready, and backends release their memory on shutdown."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from celery import Celery, signals

from .celery_app import create_celery_app
from .chain import DEFAULT_CHAIN
from .registry import backend_stages_of, close_backends, get_backend, load_backend_plugins
from .settings import get_settings
from .tasks import register_stage_tasks

log = logging.getLogger("dreammask.worker")

DEFAULT_HEARTBEAT = "/tmp/dreammask-worker.heartbeat"
_stop = threading.Event()


def heartbeat_file() -> Path:
    return Path(os.environ.get("DREAMMASK_WORKER_HEARTBEAT_FILE", DEFAULT_HEARTBEAT))


def _beat(path: Path, every_s: float = 10.0) -> None:
    while not _stop.is_set():
        try:
            path.write_text(str(time.time()))
        except OSError:
            pass
        _stop.wait(every_s)


def preload(service: str, chain=None) -> list[str]:
    """Build the backends this service is configured to preload ("stage:name" in PRELOAD_BACKENDS) among
    those its stages in the chain draw from (`StageDef.backends`)."""
    s = get_settings()
    load_backend_plugins(s)
    ours = backend_stages_of(service, chain or DEFAULT_CHAIN)
    loaded = []
    for item in s.preload_backends:
        stage, _, name = item.partition(":")
        if stage in ours:
            from .provenance import environment

            # Hash its weight files now, not in the first task (provenance: RenderRecord.environment).
            environment(get_backend(stage, name, s))
            loaded.append(item)
    return loaded


def is_prefork(pool) -> bool:
    return type(pool).__module__.endswith(".prefork")


def _lease_signals(settings, limit_s: float) -> None:
    from . import lease

    def _prerun(task_id=None, task=None, **_kw):
        from .runtime import get_runtime

        try:
            lease.on_task_start(task, get_runtime().redis, settings.lease_renew_s, limit_s)
        except Exception:  # noqa: BLE001 - a lease that cannot start must not stop the task
            log.exception("could not start the lease of task %s", task_id)

    def _postrun(task_id=None, **_kw):
        lease.on_task_end(task_id)

    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)


def create_worker_app(service: str, chain=None) -> Celery:
    """The Celery app of one service's worker, with a task for each stage of the chain the service runs."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_celery_app(settings, name=f"dreammask-{service}")
    limit = settings.time_limit_of(service)
    app.conf.update(task_time_limit=limit, task_soft_time_limit=max(1, limit - 30))
    _lease_signals(settings, limit)
    state = {"started": False}

    def _start(**_kw):
        if state["started"]:
            return
        state["started"] = True
        loaded = preload(service, chain)
        log.info("%s worker process ready; preloaded backends: %s", service, loaded or "none")
        threading.Thread(target=_beat, args=(heartbeat_file(),), daemon=True).start()

    # prefork: each child loads its models after the fork; solo/threads pools: once when ready.
    signals.worker_process_init.connect(_start, weak=False)

    def _ready(sender=None, **_kw):
        # The sender is the consumer; with prefork its children have already loaded their models, and the
        # parent must not (it would hold a second copy, on the GPU too).
        if not is_prefork(getattr(sender, "pool", None)):
            _start()

    signals.worker_ready.connect(_ready, weak=False)

    def _shutdown(**_kw):
        _stop.set()
        close_backends()
        heartbeat_file().unlink(missing_ok=True)

    signals.worker_process_shutdown.connect(_shutdown, weak=False)
    signals.worker_shutdown.connect(_shutdown, weak=False)
    register_stage_tasks(app, service, chain)
    return app
