"""Reading Celery messages straight out of Redis, to check what crosses the broker."""

from __future__ import annotations

import base64
import json


def queued_messages(redis_client, queue: str) -> list[dict]:
    """The messages waiting in a Celery queue, decoded (kombu's Redis transport: a list of JSON envelopes)."""
    out = []
    for raw in redis_client.lrange(queue, 0, -1):
        env = json.loads(raw)
        assert env["content-type"] == "application/json"
        body = json.loads(base64.b64decode(env["body"]))
        out.append({"task": env["headers"]["task"], "args": body[0], "kwargs": body[1]})
    return out
