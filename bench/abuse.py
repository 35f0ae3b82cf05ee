"""Abuse: a running API under slow clients, login and key floods, and a submission burst.

Starts the API as deployments run it (`python -m dreammask.services.api.server`: uvicorn with the protocol
that cuts slow clients) on an embedded Redis and a local store, no workers. Attackers connect from other
loopback addresses (127.0.0.2, 127.0.0.3, ...: Linux routes all of 127/8 to the loopback), while a probe
from 127.0.0.1 asks /healthz every 50 ms. Cases, one after the other:

  slow_headers   N connections sending their request headers at 1 byte/s
  slow_body      N connections declaring Content-Length: 1000000 on POST /ui/login, then 1 byte/s
  login_flood    wrong keys posted to /ui/login as fast as one client can (a fresh form each time)
  bearer_flood   wrong bearer keys on GET /v1/jobs as fast as one client can
  submit_burst   concurrent job submissions of one tenant (the active-jobs quota answers 429)

For each: connections cut (by the header/body deadline, or refused by the per-address cap) and when, the
p99 of /healthz during the flood and its failures, and the status codes (429s). The last line is one JSON
object.

    python bench/abuse.py            # 300 slow connections per case over 5 addresses, default limits
    python bench/abuse.py --fast     # 40 connections, 2 s deadlines: the test suite's run (about 30 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from dreammask.services.cli.harness import LocalPlatform

SPEC = {"train_categories": ["dog", "cat"], "num_novel": 1, "images_per_category": 1, "image_size": 64}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class Probe:
    """/healthz from 127.0.0.1 every 50 ms, in a thread: latencies and failures while something runs."""

    def __init__(self, url: str):
        self.url, self.latencies, self.failures = url, [], 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client(timeout=5) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = c.get(f"{self.url}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    self.failures += 1
                self._stop.wait(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def summary(self) -> dict:
        return {"healthz_requests": len(self.latencies) + self.failures, "healthz_failures": self.failures,
                "healthz_p50_ms": round(percentile(self.latencies, 0.5) or 0, 2),
                "healthz_p99_ms": round(percentile(self.latencies, 0.99) or 0, 2)}


async def _slow_client(port: int, source: str, head: bytes, dribble: bytes, give_up_s: float) -> dict:
    """Send `head` at once, then `dribble` one byte a second; report how and when the server ended it."""
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError as e:
        return {"how": f"connect failed: {e}", "after_s": 0.0}
    answer = b""

    async def read_all():
        nonlocal answer
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                return
            answer += chunk

    reading = asyncio.ensure_future(read_all())
    how = "never cut"
    # A connection over the per-address cap is answered 429 at once: see it before writing anything
    # (writing into a connection the server closed resets it, and the answer would be lost).
    await asyncio.wait([reading], timeout=0.2)
    try:
        if head and not reading.done():
            writer.write(head)
            await writer.drain()
        for i in range(len(dribble)):
            if reading.done():
                break
            writer.write(dribble[i:i + 1])
            await writer.drain()
            await asyncio.wait([reading], timeout=1.0)
            if time.monotonic() - t0 > give_up_s:
                break
    except (ConnectionError, OSError):
        pass
    if not reading.done():
        await asyncio.wait([reading], timeout=1.0)
    elapsed = time.monotonic() - t0
    if reading.done():
        status = re.match(rb"HTTP/1\.1 (\d{3})", answer)
        how = {b"408": "cut by deadline", b"429": "refused by cap"}.get(status.group(1), "answered") \
            if status else "closed"
    reading.cancel()
    writer.close()
    return {"how": how, "after_s": round(elapsed, 2)}


def slow_case(url: str, port: int, n: int, addresses: int, head: bytes, dribble: bytes, give_up_s: float,
              deadline_s: float) -> dict:
    sources = [f"127.0.0.{2 + i % addresses}" for i in range(n)]

    async def run():
        return await asyncio.gather(*(_slow_client(port, src, head, dribble, give_up_s) for src in sources))

    with Probe(url) as probe:
        results = asyncio.run(run())
    cut = [r["after_s"] for r in results if r["how"] == "cut by deadline"]
    out = {"connections": n, "addresses": addresses,
           "cut_by_deadline": len(cut), "refused_by_cap": sum(r["how"] == "refused by cap" for r in results),
           "never_cut": sum(r["how"] == "never cut" for r in results),
           "other": sorted({r["how"] for r in results} - {"cut by deadline", "refused by cap", "never cut"}),
           "deadline_s": deadline_s,
           "cut_after_s": {"min": min(cut), "median": round(statistics.median(cut), 2), "max": max(cut)}
           if cut else None,
           "cut_before_deadline": sum(t < deadline_s for t in cut)}
    return {**out, **probe.summary()}


def _client_from(url: str, source: str) -> httpx.Client:
    """An HTTP client whose connections come from `source` (another loopback address: another client)."""
    return httpx.Client(base_url=url, timeout=10, transport=httpx.HTTPTransport(local_address=source))


def login_flood(url: str, attempts: int, source: str) -> dict:
    codes, first_429 = [], None
    with Probe(url) as probe, _client_from(url, source) as c:
        for i in range(attempts):
            form = c.get("/ui/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
            r = c.post("/ui/login", data={"api_key": f"guess-{i:06d}", "csrf_token": token}, follow_redirects=False)
            codes.append(r.status_code)
            if r.status_code == 429 and first_429 is None:
                first_429 = i + 1
        # The form is single-use: replaying the last one is refused whatever the key.
        replay = c.post("/ui/login", data={"api_key": "guess", "csrf_token": token}, follow_redirects=False)
    return {"attempts": attempts, "source": source, "codes": _count(codes), "first_429_at_attempt": first_429,
            "replayed_form": replay.status_code, **probe.summary()}


def bearer_flood(url: str, attempts: int, source: str) -> dict:
    codes, first_429 = [], None
    with Probe(url) as probe, _client_from(url, source) as c:
        for i in range(attempts):
            r = c.get("/v1/jobs", headers={"Authorization": f"Bearer wrong-{i:06d}"})
            codes.append(r.status_code)
            if r.status_code == 429 and first_429 is None:
                first_429 = i + 1
    return {"attempts": attempts, "source": source, "codes": _count(codes), "first_429_at_attempt": first_429,
            **probe.summary()}


def submit_burst(url: str, key: str, n: int, source: str) -> dict:
    def submit(_):
        with _client_from(url, source) as c:
            return c.post("/v1/jobs", json=SPEC, headers={"Authorization": f"Bearer {key}"})

    with Probe(url) as probe, ThreadPoolExecutor(min(n, 32)) as pool:
        responses = list(pool.map(submit, range(n)))
    refused = [r for r in responses if r.status_code == 429]
    # A 429 is the quota (JSON naming it) or, for connections past the per-address cap, the server's
    # plain-text refusal.
    quota = [r for r in refused if r.headers.get("content-type", "").startswith("application/json")]
    return {"submitted": n, "codes": _count([r.status_code for r in responses]),
            "refused_by_quota": len(quota), "refused_by_connection_cap": len(refused) - len(quota),
            "quotas_named": sorted({r.json().get("quota") for r in quota}),
            "retry_after_s": sorted({int(r.headers.get("Retry-After", 0)) for r in quota}), **probe.summary()}


def _count(codes: list[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in codes:
        out[str(c)] = out.get(str(c), 0) + 1
    return dict(sorted(out.items()))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="few connections, 2 s deadlines")
    ap.add_argument("--connections", type=int, default=None, help="slow connections per case")
    ap.add_argument("--addresses", type=int, default=None, help="loopback addresses the attackers use")
    ap.add_argument("--api-nofile", type=int, default=None,
                    help="open-files limit of the API process (e.g. 256, as a small container might have)")
    args = ap.parse_args(argv)
    fast = args.fast
    n = args.connections or (40 if fast else 300)
    addresses = args.addresses or (4 if fast else 5)
    limits = {"DREAMMASK_HEADER_TIMEOUT_S": "2" if fast else "10", "DREAMMASK_BODY_GRACE_S": "2" if fast else "10",
              "DREAMMASK_MIN_BODY_RATE_BYTES_S": "100" if fast else "1024",
              "DREAMMASK_MAX_CONNECTIONS_PER_CLIENT": "8" if fast else "64",
              "DREAMMASK_AUTH_MAX_FAILURES": "10", "DREAMMASK_QUOTA_ACTIVE_JOBS": "5" if fast else "10"}
    header_s, grace_s = float(limits["DREAMMASK_HEADER_TIMEOUT_S"]), float(limits["DREAMMASK_BODY_GRACE_S"])
    root = Path(tempfile.mkdtemp(prefix="dreammask-abuse-"))
    plat = LocalPlatform(root, services=(), supervisor=False, env=limits)
    plat.start()
    try:
        if args.api_nofile:
            import resource

            api = next(p for name, p in plat.procs if name == "api")
            resource.prlimit(api.pid, resource.RLIMIT_NOFILE, (args.api_nofile, args.api_nofile))
        url, port = plat.api_url, int(plat.api_url.rsplit(":", 1)[1])
        rows = {}
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
        rows["slow_headers"] = slow_case(url, port, n, addresses, b"", head, 4 * header_s + 5, header_s)
        print("slow_headers", rows["slow_headers"], flush=True)
        body_head = (b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded"
                     b"\r\nContent-Length: 1000000\r\n\r\n")
        rows["slow_body"] = slow_case(url, port, n, addresses, body_head, b"x" * 200, 4 * grace_s + 5, grace_s)
        print("slow_body", rows["slow_body"], flush=True)
        # Each flood from an address of its own, as separate clients would be; the probe stays on 127.0.0.1.
        rows["login_flood"] = login_flood(url, 60 if fast else 200, "127.0.0.20")
        print("login_flood", rows["login_flood"], flush=True)
        rows["bearer_flood"] = bearer_flood(url, 60 if fast else 500, "127.0.0.21")
        print("bearer_flood", rows["bearer_flood"], flush=True)
        rows["submit_burst"] = submit_burst(url, plat.api_key, 20 if fast else 50, "127.0.0.22")
        print("submit_burst", rows["submit_burst"], flush=True)
    finally:
        plat.stop()
    summary = {
        "bench": "abuse", "fast": fast, "limits": {k[len("DREAMMASK_"):].lower(): v for k, v in limits.items()},
        "api_nofile": args.api_nofile,
        **rows,
        "never_cut": rows["slow_headers"]["never_cut"] + rows["slow_body"]["never_cut"],
        "healthz_failures": sum(r["healthz_failures"] for r in rows.values()),
        "max_healthz_p99_ms": max(r["healthz_p99_ms"] for r in rows.values()),
        "responses_429": sum(r["codes"].get("429", 0) for r in rows.values() if "codes" in r),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
