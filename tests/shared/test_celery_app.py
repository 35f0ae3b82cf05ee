"""The Celery contract: JSON only, late acks, one queue per service, dreammask.<service>.<verb> names."""

from __future__ import annotations

import importlib

import pytest

from dreammask.shared.celery_app import QUEUES, create_celery_app, queue_of
from dreammask.shared.settings import Settings


def test_app_configuration():
    s = Settings(task_time_limit_s=600, visibility_timeout_s=120)
    app = create_celery_app(s)
    c = app.conf
    assert c.task_serializer == "json" and c.result_serializer == "json"
    assert list(c.accept_content) == ["json"]
    assert c.task_acks_late and c.task_reject_on_worker_lost
    assert c.worker_prefetch_multiplier == 1
    assert c.broker_transport_options["visibility_timeout"] == 120
    # lapsed leases are looked for every 10 s by every worker, not on every 10th sweep
    assert c.broker_transport_options["unacked_restore_interval"] == 10
    assert c.broker_transport_options["unacked_restore_throttle"] == 1
    assert {q.name for q in c.task_queues} == set(QUEUES)
    for q in QUEUES:
        assert c.task_routes[f"dreammask.{q}.*"]["queue"] == q


def test_visibility_timeout_must_hold_several_lease_renewals():
    with pytest.raises(ValueError, match="VISIBILITY_TIMEOUT"):
        Settings(visibility_timeout_s=60, lease_renew_s=30)
    # By default a lost worker's message is back in its queue within 2 minutes (the timeout, kombu's
    # 10 s restore cycle and at most one lease interval since the last renewal).
    s = Settings()
    assert s.visibility_timeout_s + 10 + s.lease_renew_s <= 120


def test_default_retries_ride_out_minutes_of_outage_without_a_second_delivery():
    from dreammask.shared.tasks import StageTask, retry_budget_s, retry_delay

    s = Settings()
    assert retry_budget_s(s.task_max_retries, StageTask.retry_backoff, s.retry_backoff_max_s) >= 4 * 60
    # every delay, jitter included, ends before the waiting message's lease would lapse
    longest = max(retry_delay(n, StageTask.retry_backoff, s.retry_backoff_max_s) for n in range(30) for _ in range(50))
    assert s.retry_backoff_max_s <= longest <= 1.25 * s.retry_backoff_max_s < s.visibility_timeout_s


def test_each_worker_app_takes_its_queue_time_limit():
    from dreammask.shared.worker import create_worker_app

    app = create_worker_app("annotation")
    assert app.conf.task_time_limit == Settings().queue_time_limits_s["annotation"]
    assert app.conf.task_soft_time_limit == app.conf.task_time_limit - 30


@pytest.mark.parametrize("service, names", [
    ("association", {"dreammask.association.associate", "dreammask.association.plan_layouts"}),
    ("synthesis", {"dreammask.synthesis.render"}),
    ("annotation", {"dreammask.annotation.annotate"}),
    ("curation", {"dreammask.curation.curate_scenes", "dreammask.curation.assemble", "dreammask.curation.publish"}),
])
def test_each_worker_registers_its_named_tasks(service, names):
    mod = importlib.import_module(f"dreammask.services.{service}.worker")
    registered = {n for n in mod.app.tasks if n.startswith("dreammask.")}
    assert all(queue_of(n) in QUEUES for n in registered)
    # Celery's shared tasks join every app of the process: a test process that imported the trainer's (acked
    # on receipt, docs/training.md) sees it here too, while a worker process imports only its own service.
    own = {n for n in registered if queue_of(n) == service}
    assert names <= own
    for n in own:
        task = mod.app.tasks[n]
        assert task.acks_late and task.reject_on_worker_lost
        assert task.max_retries == Settings().task_max_retries


def test_bad_task_names_are_refused():
    with pytest.raises(ValueError):
        queue_of("synthesis.render")
    with pytest.raises(ValueError):
        queue_of("dreammask.nosuch.render")


def test_prefork_pools_are_told_apart_from_in_process_pools():
    from celery.concurrency import get_implementation

    from dreammask.shared.worker import is_prefork

    def pool(name):
        cls = get_implementation(name)
        return object.__new__(cls)

    assert is_prefork(pool("prefork"))
    assert not is_prefork(pool("solo")) and not is_prefork(pool("threads")) and not is_prefork(None)
