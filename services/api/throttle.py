"""Authentication throttling: failed API keys are counted in Redis per client address and per key prefix
(its first 8 characters); past `auth_max_failures` within `auth_failure_window_s` the address, or the
prefix, is locked for `auth_backoff_s`, doubling with each further failure (up to `auth_backoff_max_s`).

- A locked **address** gets 429 with Retry-After for every attempt, the right key included: nothing is
  compared, so guessing on from there cannot tell a right key from a wrong one.
- A locked **prefix** gets 429 for every wrong key that starts with it, from any address (a guesser spread
  over many addresses is seen and slowed to the back-off per address), while the right key still passes:
  whoever knows the first characters of a key cannot lock its holder out.

Every failure writes one audit line (logger `dreammask.audit`): where, the address, a fingerprint of the
key's prefix (never the key), the counts and the lock; refusals while locked are counted in the metric
`dreammask_auth_throttled_total`.

Keys in Redis (none holds a key or a prefix in clear):
    dreammask:auth:fail:{addr|key}:{id}   failures within the window (expires with it, or with the lock)
    dreammask:auth:lock:{addr|key}:{id}   present while locked; its TTL is the Retry-After

A request without any key is a plain 401 and is not counted: it guesses nothing. If Redis does not answer,
authentication goes on unthrottled (logged): a broker outage must not lock every client out.
"""

from __future__ import annotations

import hashlib
import logging
import math

import redis

log = logging.getLogger("dreammask.api")
audit = logging.getLogger("dreammask.audit")

PREFIX_CHARS = 8

# KEYS: fail addr, fail key, lock addr, lock key. ARGV: window, max failures, backoff, max backoff.
# Returns {failures by address, failures by key prefix, seconds locked (0: not locked)}.
_FAILED = """
local window, maxf, base, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local counts, locked = {}, 0
for i = 1, 2 do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], window) end
  counts[i] = n
  if n >= maxf then
    local backoff = math.floor(math.min(cap, base * 2 ^ math.min(n - maxf, 40)))
    redis.call('SET', KEYS[i + 2], n, 'EX', backoff)
    if redis.call('TTL', KEYS[i]) < backoff then redis.call('EXPIRE', KEYS[i], backoff) end
    if backoff > locked then locked = backoff end
  end
end
return {counts[1], counts[2], locked}
"""


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def key_prefix_id(key: str) -> str:
    return fingerprint(key[:PREFIX_CHARS])


def _addr_id(addr: str | None) -> str:
    return fingerprint(addr or "unknown")


def _keys(addr: str | None, key: str) -> tuple[str, str, str, str]:
    a, k = _addr_id(addr), key_prefix_id(key)
    return (f"dreammask:auth:fail:addr:{a}", f"dreammask:auth:fail:key:{k}",
            f"dreammask:auth:lock:addr:{a}", f"dreammask:auth:lock:key:{k}")


class Throttled(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"too many failed authentications; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s

    @property
    def detail(self) -> str:
        return (f"too many failed authentication attempts from this address or with this key; retry in "
                f"{self.retry_after_s} s")


def locked_for(r: redis.Redis, addr: str | None, key: str = "") -> int:
    """Seconds this address stays locked (0: it may try), or with `key`, the later of the address's and
    the key prefix's lock."""
    _, _, lock_addr, lock_key = _keys(addr, key)
    try:
        pipe = r.pipeline()
        pipe.pttl(lock_addr)
        if key:
            pipe.pttl(lock_key)
        ttls = pipe.execute()
    except redis.RedisError as e:
        log.warning("authentication throttle unavailable (Redis): %s", e)
        return 0
    return max([0, *(math.ceil(t / 1000) for t in ttls if t and t > 0)])


def check(r: redis.Redis, addr: str | None, where: str = "bearer") -> None:
    """Raise Throttled while the address is locked (before any key is compared)."""
    wait = locked_for(r, addr)
    if wait:
        throttled(where)
        raise Throttled(wait)


def throttled(where: str) -> None:
    from .metrics import AUTH_THROTTLED

    AUTH_THROTTLED.labels(where).inc()


def failed(r: redis.Redis, settings, addr: str | None, key: str, where: str, path: str = "") -> int:
    """Count a failed key; write its audit line; return the seconds now locked (0: not locked)."""
    from .metrics import AUTH_FAILURES

    AUTH_FAILURES.labels(where).inc()
    fa, fk, la, lk = _keys(addr, key)
    try:
        n_addr, n_key, locked = r.eval(_FAILED, 4, fa, fk, la, lk, settings.auth_failure_window_s,
                                       settings.auth_max_failures, settings.auth_backoff_s,
                                       settings.auth_backoff_max_s)
    except redis.RedisError as e:
        log.warning("authentication throttle unavailable (Redis): %s", e)
        n_addr = n_key = locked = -1
    audit.warning("auth_failure where=%s addr=%s key_prefix=%s failures_addr=%s failures_key=%s locked_s=%s path=%s",
                  where, addr or "-", key_prefix_id(key)[:8] if key else "-", n_addr, n_key, max(0, int(locked)),
                  path[:200] or "-")
    return max(0, int(locked))


def client_addr(scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None
