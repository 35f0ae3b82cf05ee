"""Trusted hosts: the API answers only for the hosts it was told about, so a forged `Host` header never
reaches a URL it hands out (`Location`, job and download links) or a page.

Allowed: the names in `DREAMMASK_ALLOWED_HOSTS` (default: localhost, 127.0.0.1, ::1; "*" any host;
"*.example.com" any subdomain) and the host of `DREAMMASK_PUBLIC_BASE_URL`. Links are built from
`DREAMMASK_PUBLIC_BASE_URL` when it is set, else from the (then known) Host of the request
(`deps.base_url`). Any other Host, or none, gets 400.

The probes (/healthz, /readyz) and /metrics answer whatever the Host: orchestrators and scrapers call them
by the pod's address, and they put no URL in what they return.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from dreammask.shared.settings import Settings

log = logging.getLogger("dreammask.api")

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _hostname(value: str) -> str:
    """The host of a Host header value: lower case, without port, IPv6 without brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else ""
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def allowed_hosts(settings: Settings) -> list[str]:
    hosts = [_hostname(h) if not h.startswith("*") else h.lower() for h in settings.allowed_hosts]
    if settings.public_base_url:
        public = urlsplit(settings.public_base_url).hostname
        if public:
            hosts.append(public.lower())
    return hosts


def host_allowed(host: str, allowed: list[str]) -> bool:
    name = _hostname(host)
    if not name:
        return False
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and name != pattern[2:]:
            return True
    return False


class TrustedHostMiddleware:
    """Pure ASGI, outermost but for the header-size limit: a request for an unknown host goes no further than a 400."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.allowed = allowed_hosts(settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
        if host_allowed(host, self.allowed):
            return await self.app(scope, receive, send)
        log.info("refused Host %r from %s", host[:100], (scope.get("client") or ["?"])[0])
        body = json.dumps({"detail": "unknown Host header: this API answers only for the hosts in "
                                     "DREAMMASK_ALLOWED_HOSTS and DREAMMASK_PUBLIC_BASE_URL"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
