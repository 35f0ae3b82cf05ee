"""Leases keep a running task's message out of redelivery, and only while it runs."""

from __future__ import annotations

import time

from dreammask.shared.lease import UNACKED_INDEX, Lease


def test_a_lease_refreshes_only_an_unacked_entry(redis_client):
    old = time.time() - 1000
    redis_client.zadd(UNACKED_INDEX, {"tag-running": old})
    lease = Lease(redis_client, "tag-running", every_s=0.05).start()
    try:
        time.sleep(0.2)
        assert redis_client.zscore(UNACKED_INDEX, "tag-running") > old + 990
        # Once acked (removed), a renewal does not bring the entry back.
        redis_client.zrem(UNACKED_INDEX, "tag-running")
        time.sleep(0.15)
        assert redis_client.zscore(UNACKED_INDEX, "tag-running") is None
    finally:
        lease.stop()
    redis_client.zadd(UNACKED_INDEX, {"tag-running": old})
    time.sleep(0.15)
    assert redis_client.zscore(UNACKED_INDEX, "tag-running") == old  # stopped: it ages toward redelivery


def test_a_lease_lapses_at_its_tasks_time_limit(redis_client):
    """A task past its time limit stops renewing (a threads pool cannot kill it), so its message ages
    toward redelivery as if its worker had died."""
    old = time.time() - 1000
    redis_client.zadd(UNACKED_INDEX, {"tag-hung": old})
    lease = Lease(redis_client, "tag-hung", every_s=0.05, limit_s=0.3).start()
    try:
        time.sleep(0.2)
        renewed = redis_client.zscore(UNACKED_INDEX, "tag-hung")
        assert renewed > old + 990  # renewed while within its limit
        time.sleep(0.4)
        last = redis_client.zscore(UNACKED_INDEX, "tag-hung")
        time.sleep(0.3)
        assert redis_client.zscore(UNACKED_INDEX, "tag-hung") == last  # past it: no more renewals
        assert not lease._thread.is_alive()
    finally:
        lease.stop()
        redis_client.zrem(UNACKED_INDEX, "tag-hung")


def test_a_lease_survives_a_broker_outage(redis_url):
    import redis

    from dreammask.services.cli.harness import free_port

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    assert Lease(dead, "t", every_s=1).renew() is False
