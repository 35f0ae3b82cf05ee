"""Slow clients against the real server (uvicorn with the API's protocol, on loopback): headers or a body
dribbled at one byte a second are cut once their deadline passes, a client address gets no more than its
share of connections, and /healthz keeps answering from another address all the while.

The attackers connect from 127.0.0.2 (Linux routes all of 127/8 to the loopback), the health probe from
127.0.0.1, as two clients would."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from dreammask.services.api import server
from dreammask.services.api.main import create_app
from dreammask.services.cli.harness import free_port
from dreammask.shared.runtime import build_runtime
from dreammask.shared.settings import Settings

LIMITS = server.ClientLimits(header_timeout_s=2.0, min_body_rate_bytes_s=100, body_grace_s=2.0,
                             send_timeout_s=5.0, max_connections_per_client=6)
ATTACKER = "127.0.0.2"


def _serve(tmp_path, redis_url, limits=None, base=None, **settings):
    """The API behind the hardened HTTP server on a free loopback port, as the API process runs it, with
    these client limits (default: the settings')."""
    s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", api_keys={"key-alice": "alice"},
                 **settings)
    app = create_app(s, build_runtime(s))
    port = free_port()
    protocol = server.protocol_for(limits or server.ClientLimits.from_settings(s), base)
    srv = uvicorn.Server(server.config(app, port=port, settings=s, log_level="warning", protocol=protocol))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and t.is_alive(), "the server did not start"
        time.sleep(0.05)
    return srv, t, port, protocol


@pytest.fixture()
def live(tmp_path, redis_url, redis_client):
    srv, t, port, protocol = _serve(tmp_path, redis_url, LIMITS)
    yield {"url": f"http://127.0.0.1:{port}", "port": port, "protocol": protocol}
    srv.should_exit = True
    t.join(10)


def connect(port: int) -> socket.socket:
    s = socket.socket()
    s.bind((ATTACKER, 0))
    s.connect(("127.0.0.1", port))
    s.settimeout(0.05)
    return s


def dribble(sock: socket.socket, payload: bytes, give_up_s: float) -> tuple[bool, float, bytes]:
    """Send one byte a second until the server closes the connection; (cut, seconds, what it answered)."""
    t0, answer = time.monotonic(), b""
    for i in range(len(payload)):
        try:
            sock.sendall(payload[i:i + 1])
        except OSError:
            return True, time.monotonic() - t0, answer
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return True, time.monotonic() - t0, answer
            if not chunk:
                return True, time.monotonic() - t0, answer
            answer += chunk
        if time.monotonic() - t0 > give_up_s:
            break
    return False, time.monotonic() - t0, answer


def probe_while(url: str, stop: threading.Event, results: list) -> None:
    with httpx.Client(timeout=5) as c:
        while not stop.is_set():
            try:
                results.append(c.get(f"{url}/healthz").status_code)
            except httpx.HTTPError as e:
                results.append(repr(e))
            time.sleep(0.2)


def attack(live, payload: bytes, give_up_s: float):
    stop, probes = threading.Event(), []
    prober = threading.Thread(target=probe_while, args=(live["url"], stop, probes))
    prober.start()
    try:
        with connect(live["port"]) as sock:
            result = dribble(sock, payload, give_up_s)
    finally:
        stop.set()
        prober.join()
    return result, probes


def test_headers_sent_at_one_byte_a_second_are_cut_at_the_deadline(live):
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 60 + b"\r\n\r\n"
    (cut, seconds, answer), probes = attack(live, request, give_up_s=4 * LIMITS.header_timeout_s)
    assert cut, "a client sending its headers at 1 byte/s was never cut"
    # Not before its deadline. The server's clock starts when it accepts the connection, a moment before this
    # client's (which starts once connect() returned): hence the small allowance.
    assert seconds >= LIMITS.header_timeout_s - 0.2
    assert answer.startswith(b"HTTP/1.1 408") and b"headers not complete" in answer
    assert probes and all(p == 200 for p in probes), probes
    assert live["protocol"].cuts["headers"] == 1


def test_a_body_sent_at_one_byte_a_second_is_cut(live):
    head = (b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000000\r\n\r\n")
    with connect(live["port"]) as sock:
        sock.sendall(head)  # the headers arrive at once: the body's deadline applies
        cut, seconds, answer = dribble(sock, b"x" * 60, give_up_s=4 * LIMITS.body_grace_s)
    assert cut, "a body sent at 1 byte/s was never cut"
    assert seconds >= LIMITS.body_grace_s
    assert answer.startswith(b"HTTP/1.1 408") and b"request body slower than" in answer
    assert live["protocol"].cuts["body"] == 1


def test_a_body_at_a_fair_rate_is_not_cut(live):
    body = b"x" * 900  # 300 bytes per 0.5 s: above the minimum rate
    head = (b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", live["port"])) as sock:
        sock.sendall(head)
        for i in range(0, len(body), 300):
            time.sleep(0.5)
            sock.sendall(body[i:i + 300])
        sock.settimeout(10)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 405")  # the app answered (GET only): the body was read in full
    assert sum(live["protocol"].cuts.values()) == 0


def test_connections_per_client_address_are_capped(live):
    held = [connect(live["port"]) for _ in range(LIMITS.max_connections_per_client)]
    try:
        for s in held:
            s.sendall(b"GET /heal")  # open, unfinished requests
        extra = connect(live["port"])
        extra.settimeout(5)
        answer = extra.recv(4096)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 429") and b"open connections from 127.0.0.2" in answer
        # Another address is not affected, and keeps being served.
        assert httpx.get(f"{live['url']}/healthz", timeout=5).status_code == 200
    finally:
        for s in held:
            s.close()
    # Closed connections give their places back.
    deadline = time.monotonic() + 5
    while live["protocol"].open_per_client.get(ATTACKER, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    with connect(live["port"]) as s:
        s.settimeout(5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5)
        try:
            sock.sendall(data)
        except OSError:
            pass  # cut while sending: what it answered before is still readable
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and b"connection: close" not in answer.lower():
                break
    return answer


PROTOCOLS = [server.GuardedH11Protocol] + ([server.GuardedHttpToolsProtocol]
                                           if server.HttpToolsProtocol is not None else [])


@pytest.mark.parametrize("base", PROTOCOLS, ids=lambda b: b.__name__)
def test_request_headers_past_the_limit_are_a_431(tmp_path, redis_url, redis_client, base):
    srv, t, port, protocol = _serve(tmp_path, redis_url, base=base, max_header_bytes=4096)
    try:
        line = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        # Under the limit: served.
        assert _exchange(port, line + b"X-Pad: " + b"a" * 3000 + b"\r\n\r\n").startswith(b"HTTP/1.1 200")
        # Past it, headers that end: 431 with what to change.
        answer = _exchange(port, line + b"X-Pad: " + b"a" * 2000 + b"\r\nX-Pad2: " + b"b" * 3000 + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"DREAMMASK_MAX_HEADER_BYTES" in answer and b"4096 bytes" in answer
        # Headers that never end: cut as soon as they pass the limit and the request line's allowance,
        # long before the header deadline, and never buffered beyond that.
        t0 = time.monotonic()
        answer = _exchange(port, line + b"X-Pad: " + b"a" * (1 << 20))
        assert answer.startswith(b"HTTP/1.1 431") and b"did not end" in answer, answer[:200]
        assert time.monotonic() - t0 < 3 and protocol.cuts["header_size"] == 1
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        srv.should_exit = True
        t.join(10)
