"""Serving the API: uvicorn with an HTTP protocol that cuts slow clients.

uvicorn limits how long an idle keep-alive connection stays open, but not how long a client may take to
send its request: headers or a body dribbled at one byte a second hold a connection (and a file
descriptor) for as long as the client likes, and a few hundred such connections starve the process.
`GuardedHttpProtocol` (uvicorn's own protocol, httptools or h11, with deadlines added) closes a connection

- whose request line and headers are not complete `header_timeout_s` after it opened, or after the
  previous response on it ended (keep-alive): 408;
- whose body falls below `min_body_rate_bytes_s` once `body_grace_s` have passed (the body may take
  `body_grace_s + received / min_body_rate_bytes_s` seconds): 408;
- that does not read its response for `send_timeout_s` (the socket's send buffer stays full);
- whose request line and headers pass `max_header_bytes` + 8 KiB before they end: 431 (neither of
  uvicorn's parsers bounds them otherwise; headers that end under that are checked exactly, against
  `max_header_bytes`, by hardening.HeaderLimitMiddleware);

and refuses a connection beyond `max_connections_per_client` open ones from the same address (429, then
closed). Every cut is logged with the client's address and why.

    python -m dreammask.services.api.server --host 0.0.0.0 --port 8000      # what every deployment runs
    dreammask api                                                            # the same, for one machine
    uvicorn dreammask.services.api.main:app --http dreammask.services.api.server:GuardedHttpProtocol

The limits come from the settings (DREAMMASK_HEADER_TIMEOUT_S, ...); counts are per process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the faster parser where installed (uvicorn[standard])
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - h11 only
    HttpToolsProtocol = None

log = logging.getLogger("dreammask.api.server")

APP = "dreammask.services.api.main:app"
# What a request line (method, URL, version) may add to the header limit before the protocol cuts.
REQUEST_LINE_ALLOWANCE = 8192


@dataclass(frozen=True)
class ClientLimits:
    header_timeout_s: float = 10.0
    min_body_rate_bytes_s: int = 1024
    body_grace_s: float = 10.0
    send_timeout_s: float = 60.0
    max_connections_per_client: int = 64
    max_header_bytes: int = 32_768

    @classmethod
    def from_settings(cls, s) -> ClientLimits:
        return cls(s.header_timeout_s, s.min_body_rate_bytes_s, s.body_grace_s, s.send_timeout_s,
                   s.max_connections_per_client, s.max_header_bytes)

    @property
    def max_head_bytes(self) -> int:
        """Request line and headers together, as they arrive: the header limit plus room for the line."""
        return self.max_header_bytes + REQUEST_LINE_ALLOWANCE


def _raw_response(status: str, message: str, extra: str = "") -> bytes:
    body = message.encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n{extra}"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


class _Deadlines:
    """Mixed into a uvicorn HTTP protocol. It reads only what both of uvicorn's protocols share: `cycle`
    (the request being served: `more_body`, `response_started`, `response_complete`), `transport`,
    `client`, `flow` and the `data_received` / `on_response_complete` / `pause_writing` hooks."""

    limits: ClientLimits | None = None  # None: from the settings, on first use
    open_per_client: Counter = Counter()  # this process's open connections per client address
    cuts: Counter = Counter()  # why connections were cut, for tests and benchmarks

    @classmethod
    def _limits(cls) -> ClientLimits:
        if cls.limits is None:
            from dreammask.shared.settings import get_settings

            cls.limits = ClientLimits.from_settings(get_settings())
        return cls.limits

    # ------------------------------------------------------------ connection
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        lim = self._limits()
        self._timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._counted_as = None
        self._phase, self._cycle, self._body_bytes, self._head_bytes = "", None, 0, 0
        self._phase_start = time.monotonic()
        addr = self.client[0] if self.client else None
        if addr is not None and lim.max_connections_per_client:
            if self.open_per_client[addr] >= lim.max_connections_per_client:
                self._cut("connections", f"more than {lim.max_connections_per_client} open connections from "
                                         f"{addr}", "429 Too Many Requests", "Retry-After: 5\r\n")
                return
            self.open_per_client[addr] += 1
            self._counted_as = addr
        self._enter("headers")

    def connection_lost(self, exc) -> None:
        self._cancel_timers()
        if self._counted_as is not None:
            self.open_per_client[self._counted_as] -= 1
            if self.open_per_client[self._counted_as] <= 0:
                del self.open_per_client[self._counted_as]
            self._counted_as = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == "body":
            self._body_bytes += len(data)
        elif self._phase == "headers":
            self._head_bytes += len(data)
        super().data_received(data)
        self._sync()
        lim = self._limits()
        if self._phase == "headers" and self._head_bytes > lim.max_head_bytes and not self.transport.is_closing():
            # Still no end of headers: cut now rather than let the parser buffer without bound.
            from .hardening import header_limit_message

            self._cut("header_size", f"request line and headers past {lim.max_head_bytes} bytes without an end",
                      "431 Request Header Fields Too Large", body=header_limit_message(None, lim.max_header_bytes))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._sync()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None and not self.transport.is_closing():
            self._send_timer = self.loop.call_later(self._limits().send_timeout_s, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    # ------------------------------------------------------------ phases
    def _sync(self) -> None:
        """Follow the request on the connection: waiting for headers, reading a body, or in the app."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            if self._phase != "headers" or cycle is not self._cycle:
                self._cycle = cycle
                self._enter("headers")
        elif cycle is not self._cycle:
            self._cycle = cycle
            self._enter("body" if cycle.more_body else "app")
        elif self._phase == "body" and not cycle.more_body:
            self._enter("app")

    def _enter(self, phase: str) -> None:
        self._phase, self._phase_start, self._body_bytes, self._head_bytes = phase, time.monotonic(), 0, 0
        self._schedule()

    def _deadline(self) -> float | None:
        lim = self._limits()
        if self._phase == "headers":
            return self._phase_start + lim.header_timeout_s
        if self._phase == "body":
            return self._phase_start + lim.body_grace_s + self._body_bytes / lim.min_body_rate_bytes_s
        return None  # the app is working: no deadline of the client's

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._deadline()
        if deadline is not None:
            self._timer = self.loop.call_later(max(0.0, deadline - time.monotonic()), self._check)

    def _check(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        deadline = self._deadline()
        if deadline is None:
            return
        if time.monotonic() < deadline:
            self._schedule()  # the body moved on since: a later deadline
            return
        if self._phase == "body" and self.flow.read_paused:
            # We stopped reading (the app has not consumed what came): not the client's fault.
            self._phase_start += 1.0
            self._schedule()
            return
        lim = self._limits()
        if self._phase == "headers":
            self._cut("headers", f"request headers not complete within {lim.header_timeout_s:g} s",
                      "408 Request Timeout")
        else:
            self._cut("body", f"request body slower than {lim.min_body_rate_bytes_s} bytes/s "
                              f"({self._body_bytes} bytes in {time.monotonic() - self._phase_start:.1f} s)",
                      "408 Request Timeout")

    def _send_stalled(self) -> None:
        self._send_timer = None
        if self.flow.write_paused and not self.transport.is_closing():
            self._cut("send", f"response not read for {self._limits().send_timeout_s:g} s", None)

    def _cut(self, why: str, detail: str, status: str | None, extra: str = "", body: str | None = None) -> None:
        self.cuts[why] += 1
        addr = self.client[0] if self.client else "?"
        log.warning("slow client %s cut: %s", addr, detail)
        cycle = self.cycle
        if status is not None and (cycle is None or cycle.response_complete or not cycle.response_started):
            try:
                self.transport.write(_raw_response(status, (body or detail) + "\n", extra))
            except Exception:  # noqa: BLE001 - the socket may be gone already
                pass
        self._cancel_timers()
        self.transport.close()

    def _cancel_timers(self) -> None:
        for name in ("_timer", "_send_timer"):
            t = getattr(self, name, None)
            if t is not None:
                t.cancel()
                setattr(self, name, None)


class GuardedH11Protocol(_Deadlines, H11Protocol):
    pass


if HttpToolsProtocol is not None:
    class GuardedHttpToolsProtocol(_Deadlines, HttpToolsProtocol):
        pass

    GuardedHttpProtocol = GuardedHttpToolsProtocol
else:  # pragma: no cover
    GuardedHttpProtocol = GuardedH11Protocol


def protocol_for(limits: ClientLimits, base: type = None) -> type:
    """A protocol class bound to these limits (tests, benchmarks; deployments read the settings)."""
    base = base or GuardedHttpProtocol
    return type(base.__name__, (base,), {"limits": limits, "open_per_client": Counter(), "cuts": Counter()})


def config(app=APP, host: str = "127.0.0.1", port: int = 8000, settings=None, log_level: str = "info",
           protocol: type | None = None, **kw):
    """The uvicorn Config every way of serving the API uses."""
    import uvicorn

    from dreammask.shared.settings import get_settings

    s = settings or get_settings()
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        http=protocol or protocol_for(ClientLimits.from_settings(s)),
        proxy_headers=True, forwarded_allow_ips=s.forwarded_allow_ips,
        # An idle keep-alive connection closes after this; a started request is under the deadlines above.
        timeout_keep_alive=5, h11_max_incomplete_event_size=_h11_head_limit(s), **kw)


def _h11_head_limit(s) -> int:
    # h11 refuses (400) an unfinished head past its own limit (16 KiB by default), counted while it parses a
    # read: set past ours plus one read of the event loop (256 KiB), so the protocol's 431 comes first and the
    # header limit means the same under either parser.
    return s.max_header_bytes + REQUEST_LINE_ALLOWANCE + (256 << 10) + 1


def raise_open_files_limit() -> int:
    """Every connection is a file descriptor: take the hard limit the process is allowed (often 1024 soft
    against a far larger hard limit), so it takes many addresses' worth of capped connections to run out."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on Linux, or not allowed
        return -1


def serve(host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", workers: int = 1) -> None:
    import uvicorn

    raise_open_files_limit()
    if workers > 1:
        # Worker processes rebuild their server from the config: the module-level protocol class, which
        # reads its limits from the settings in each of them.
        from dreammask.shared.settings import get_settings

        s = get_settings()
        uvicorn.run(APP, host=host, port=port, log_level=log_level, workers=workers, http=GuardedHttpProtocol,
                    proxy_headers=True, forwarded_allow_ips=s.forwarded_allow_ips, timeout_keep_alive=5,
                    h11_max_incomplete_event_size=_h11_head_limit(s))
        return
    uvicorn.Server(config(APP, host=host, port=port, log_level=log_level)).run()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Serve the DreamMask API (uvicorn, slow clients cut).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--workers", type=int, default=1, help="processes (each with its own per-address counts)")
    args = ap.parse_args(argv)
    serve(args.host, args.port, args.log_level, args.workers)


if __name__ == "__main__":
    main()
