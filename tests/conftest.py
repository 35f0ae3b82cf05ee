"""Fixtures that start real services on loopback: Redis (the running one on 127.0.0.1:6379 with a DB index of
this run's own, else an embedded redis-server), an S3-protocol server (moto_server), and the whole platform
as separate processes (`platform`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from dreammask.services.cli.harness import LocalPlatform, free_port, redis_server_binary

# Model downloads are never allowed in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _system_redis() -> redis.Redis | None:
    try:
        r = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5)
        r.ping()
        return r
    except redis.RedisError:
        return None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A Redis DB that belongs to this test session alone; flushed before and after."""
    base = _system_redis()
    proc = None
    if base is not None:
        # Claim a free DB index (other test runs may share this Redis).
        token = uuid.uuid4().hex
        for db in range(15, 0, -1):
            if base.set(f"dreammask-test-db-claim:{db}", token, nx=True, ex=3600):
                break
        else:
            pytest.fail("no free Redis DB index on 127.0.0.1:6379")
        url = f"redis://127.0.0.1:6379/{db}"
    else:
        port = free_port()
        d = tmp_path_factory.mktemp("redis")
        proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.RedisError:
                time.sleep(0.1)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    if proc is not None:
        proc.terminate()
        proc.wait(10)
    else:
        base.delete(f"dreammask-test-db-claim:{url.rsplit('/', 1)[1]}")


@pytest.fixture()
def redis_client(redis_url):
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    yield r
    r.flushdb()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto_server) on loopback for the S3 store's tests."""
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if exe is None:
        pytest.fail("moto_server is not installed: `pip install 'moto[server]'` (the dev extra has it)")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not _port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("moto_server did not start")
        time.sleep(0.1)
    yield {"endpoint": f"127.0.0.1:{port}", "access_key": "testing", "secret_key": "testing", "port": port}
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory):
    """One cache for the whole session: the shipped vocabulary is embedded once, not once per test."""
    return tmp_path_factory.mktemp("dreammask-cache")


@pytest.fixture()
def platform(tmp_path, redis_url, shared_cache_dir):
    """Factory: `platform(env=None, services=(...))` starts the API and real worker processes on this
    session's Redis DB and a local store under tmp_path; everything is stopped after the test."""
    started: list[LocalPlatform] = []

    def start(env: dict | None = None, services=("association", "synthesis", "annotation", "curation"),
              extra_workers=None, pools=None) -> LocalPlatform:
        redis.Redis.from_url(redis_url).flushdb()
        env = {"DREAMMASK_CACHE_DIR": str(shared_cache_dir), **(env or {})}
        p = LocalPlatform(tmp_path / f"platform{len(started)}", services=tuple(services), env=env,
                          redis_url=redis_url, extra_workers=extra_workers, pools=pools)
        started.append(p)
        p.start()
        return p

    yield start
    for p in started:
        p.stop()
