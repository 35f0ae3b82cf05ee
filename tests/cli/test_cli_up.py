"""`dreammask up` runs the platform until Ctrl-C and tells a second shell how to reach it (`dreammask env`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from cli_helpers import cli

from dreammask.services.cli.harness import free_port
from dreammask.services.cli.platform import WORKER_MODULES


def _env_from(text: str) -> dict[str, str]:
    import shlex

    out = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        k, _, v = line[len("export "):].partition("=")
        out[k] = shlex.split(v)[0]
    return out


@pytest.mark.integration
def test_up_env_and_ctrl_c(tmp_path, shared_cache_dir):
    root = tmp_path / "platform"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMMASK_")}
    env["DREAMMASK_CACHE_DIR"] = str(shared_cache_dir)  # passed through to every process
    # One light worker keeps the test short; the default starts all five, training included.
    proc = subprocess.Popen([sys.executable, "-m", "dreammask.services.cli", "up", "--root", str(root),
                             "--port", str(port), "--services", "curation"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (root / "env.sh").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "dreammask up did not come up"
            time.sleep(0.3)
        r = cli("env", "--root", str(root))
        assert r.returncode == 0, r.stderr
        exported = _env_from(r.stdout)
        assert exported["DREAMMASK_API_URL"] == f"http://127.0.0.1:{port}"
        assert exported["DREAMMASK_API_KEY"] and exported["DREAMMASK_REDIS_URL"].startswith("redis://")
        # The second shell, with only those variables, talks to the platform.
        r = cli("list", "--json", env=exported)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().startswith("{") and '"total": 0' in r.stdout
        r = cli("list", env={**exported, "DREAMMASK_API_KEY": "wrong"})
        assert r.returncode == 1 and "401" in r.stderr
    finally:
        os.killpg(proc.pid, signal.SIGINT) if proc.poll() is None else None
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped." in out and 'eval "$(dreammask env' in out
    assert not (root / "env.sh").exists()
    r = cli("env", "--root", str(root))
    assert r.returncode == 1 and "no platform is running" in r.stderr
    # Every process `up` started has ended: the API's port is free again.
    assert {p.stem for p in (root / "logs").glob("*.log")} == {"redis", "api", "curation", "supervisor"}
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_every_queue_has_a_worker_command_including_training():
    import importlib.util

    assert set(WORKER_MODULES) == {"association", "synthesis", "annotation", "curation", "training"}
    for module in WORKER_MODULES.values():
        assert importlib.util.find_spec(module) is not None, module
