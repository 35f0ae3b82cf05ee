"""A Redis client for probes: the same Redis as the runtime's, with short timeouts and no retries, so a
readiness check or a metrics scrape answers quickly on a stalled broker. Used by routes/health.py and
metrics.py (which do not import each other)."""

from __future__ import annotations

import redis

_fast_redis: dict[int, redis.Redis] = {}


def quick_redis(rt) -> redis.Redis:
    """A client of the same Redis with short timeouts and no retries, for probes only."""
    key = id(rt.redis)
    client = _fast_redis.get(key)
    if client is None:
        kw = dict(rt.redis.connection_pool.connection_kwargs)
        kw.update(socket_timeout=1.0, socket_connect_timeout=1.0, retry_on_timeout=False)
        kw.pop("retry", None)
        pool = redis.ConnectionPool(connection_class=rt.redis.connection_pool.connection_class, **kw)
        client = _fast_redis[key] = redis.Redis(connection_pool=pool, retry=None)
    return client
