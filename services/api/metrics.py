"""Prometheus metrics of the API: requests, submissions, and queue depths read at scrape time."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from dreammask.shared.celery_app import QUEUES

from .probes import quick_redis

REGISTRY = CollectorRegistry()
REQUESTS = Counter("dreammask_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("dreammask_http_request_seconds", "HTTP request latency", ["route"], registry=REGISTRY)
# Tenant names are labels only when DREAMMASK_METRICS_TENANT_LABELS is on; otherwise every job counts as "all".
JOBS_SUBMITTED = Counter("dreammask_jobs_submitted_total", "Jobs accepted", ["tenant"], registry=REGISTRY)


def count_submission(tenant: str, settings) -> None:
    JOBS_SUBMITTED.labels(tenant=tenant if settings.metrics_tenant_labels else "all").inc()
# Failed keys (compared and wrong) and attempts refused while throttled, by where (bearer, ui_login, metrics).
AUTH_FAILURES = Counter("dreammask_auth_failures_total", "Wrong API keys or tokens", ["where"], registry=REGISTRY)
AUTH_THROTTLED = Counter("dreammask_auth_throttled_total", "Authentication attempts refused while throttled",
                         ["where"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("dreammask_queue_depth", "Messages waiting per Celery queue", ["queue"], registry=REGISTRY)


def render_metrics(rt) -> tuple[bytes, str]:
    try:
        # A scrape must not hang on a stalled broker: a short-timeout client of the same Redis.
        pipe = quick_redis(rt).pipeline()
        for q in QUEUES:
            pipe.llen(q)
        for q, n in zip(QUEUES, pipe.execute()):
            QUEUE_DEPTH.labels(queue=q).set(n)
    except Exception:  # noqa: BLE001 - metrics must render even when the broker is down
        pass
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


async def metrics_middleware(request, call_next):
    t0 = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    path = getattr(route, "path", "unmatched")
    REQUESTS.labels(request.method, path, str(response.status_code)).inc()
    LATENCY.labels(path).observe(time.perf_counter() - t0)
    return response
