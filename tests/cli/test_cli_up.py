"""`dreammask up` runs the platform like a service: one per state folder, a key kept across restarts, stopped
by SIGTERM, SIGHUP, Ctrl-C or `dreammask down` with every process it started; `dreammask env` tells a second
shell how to reach it."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cli_helpers import cli, error_lines

from dreammask.services.cli.harness import free_port
from dreammask.services.cli.platform import ENV_FILE, KEY_FILE, STATE_DIR, _Lock, stored_key


def _env_from(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        k, _, v = line[len("export "):].partition("=")
        out[k] = shlex.split(v)[0]
    return out


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_in(root: Path) -> list[str]:
    """Processes whose working folder is `root` (every process `up` starts runs there)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if Path(os.readlink(d / "cwd")) == root:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{d.name}: {cmd[:120]}")
        except OSError:
            continue
    return found


def _start_up(root: Path, port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dreammask.services.cli", "up", "--root", str(root),
                             "--port", str(port), "--services", "curation"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=root.parent)


def _wait_up(proc: subprocess.Popen, root: Path) -> None:
    deadline = time.monotonic() + 240
    while not (root / ENV_FILE).exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "dreammask up did not come up"
        time.sleep(0.3)


def _ui_login(base: str, key: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=30)
    form = c.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    r = c.post("/ui/login", data={"api_key": key, "csrf_token": token, "next": "/ui/jobs"})
    assert r.status_code == 303 and "dm_session" in c.cookies, r.text
    return c


@pytest.mark.integration
def test_up_runs_like_a_service(tmp_path, shared_cache_dir):
    root = tmp_path / "platform"
    port = free_port()
    # A shell where `dreammask` is not on PATH (the venv not activated), as after `make demo`.
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMMASK_")}
    env.update(PATH=path, COLUMNS="250", DREAMMASK_CACHE_DIR=str(shared_cache_dir))  # passed to every process
    proc = _start_up(root, port, env)
    ui = None
    try:
        _wait_up(proc, root)
        key_file = root / STATE_DIR / KEY_FILE
        assert _mode(key_file) == 0o600 and _mode(root / ENV_FILE) == 0o600
        key = key_file.read_text().strip()
        r = cli("env", "--root", str(root))
        assert r.returncode == 0, r.stderr
        exported = _env_from(r.stdout)
        assert exported["DREAMMASK_API_URL"] == f"http://127.0.0.1:{port}"
        assert exported["DREAMMASK_API_KEY"] == key and exported["DREAMMASK_REDIS_URL"].startswith("redis://")
        redis_port = int(exported["DREAMMASK_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        # The second shell, with only those variables, talks to the platform.
        r = cli("list", "--json", env=exported)
        assert r.returncode == 0 and '"total": 0' in r.stdout, r.stderr
        r = cli("list", env={**exported, "DREAMMASK_API_KEY": "wrong"})
        assert r.returncode == 1 and "401" in r.stderr

        # `/` leads to the UI, and the UI takes the stored key.
        r = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=False)
        assert r.status_code in (302, 303, 307) and r.headers["location"] == "/ui"
        ui = _ui_login(f"http://127.0.0.1:{port}", key)

        # A second `up` on the same folder is refused at once, naming the running one and `down`.
        r = cli("up", "--root", str(root), "--port", str(free_port()), "--services", "curation")
        lines = error_lines(r)
        assert r.returncode == 1 and "already running" in lines[0] and str(proc.pid) in lines[0], r.stderr
        assert "dreammask down" in r.stderr

        # `kill -HUP <pid>` of `up` alone (not its group) stops every process it started.
        os.kill(proc.pid, signal.SIGHUP)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out
        assert "stopping (SIGHUP)" in out and "stopped." in out
        deadline = time.monotonic() + 10
        while _processes_in(root) and time.monotonic() < deadline:
            time.sleep(0.2)  # children already reaped by `up`; /proc may lag a moment
        assert not _processes_in(root), _processes_in(root)
        assert not _port_open(port) and not _port_open(redis_port)
        assert not (root / ENV_FILE).exists()
        r = cli("env", "--root", str(root))
        assert r.returncode == 1 and "no platform is running" in r.stderr
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    # What `up` printed: the UI's address, how to log in, and a command this PATH can run.
    assert f"review UI: http://127.0.0.1:{port}/ui" in out and str(key_file) in out and key not in out
    m = re.search(r'eval "\$\((.+) env --root (\S+)\)"', out)
    assert m and m.group(1) != "dreammask" and m.group(1).endswith("dreammask"), out
    assert f"down --root {m.group(2)}" in out

    # Started again: the same key, and the UI session made before the restart still works.
    proc = _start_up(root, port, env)
    try:
        _wait_up(proc, root)
        assert (root / STATE_DIR / KEY_FILE).read_text().strip() == key
        # The printed line works in a shell without `dreammask` on PATH (run from where `up` was started).
        shell = subprocess.run(["bash", "-c", f'eval "$({m.group(1)} env --root {m.group(2)})" && '
                                f'{m.group(1)} list --json'], env=env, cwd=root.parent, capture_output=True,
                               text=True, timeout=120)
        assert shell.returncode == 0 and '"total": 0' in shell.stdout, shell.stderr
        page = ui.get("/ui/jobs", follow_redirects=False)
        assert page.status_code == 200 and 'id="logout"' in page.text
        # `dreammask down` stops it as a signal would.
        r = cli("down", "--root", str(root))
        assert r.returncode == 0 and "stopped." in r.stdout, r.stderr
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stopping (SIGTERM)" in out, out
        assert not _port_open(port) and not _processes_in(root)
        r = cli("down", "--root", str(root))
        assert r.returncode == 1 and "no platform is running" in r.stderr
    finally:
        ui.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_second_up_is_refused_before_starting_anything(tmp_path):
    root = tmp_path / "platform"
    lock = _Lock(root)
    lock.acquire()  # this test process plays the running `up`
    try:
        r = cli("up", "--root", str(root), "--services", "curation")
        lines = error_lines(r)
        assert r.returncode == 1 and len(lines) == 2, r.stderr
        assert "already running" in lines[0] and str(os.getpid()) in lines[0] and "down" in lines[1]
        assert not (root / "logs").exists()
    finally:
        lock.release()
    assert _Lock(root).holder() is None


def test_a_stale_env_file_is_removed_and_reported(tmp_path):
    root = tmp_path / "platform"
    root.mkdir()
    # What an `up` killed with SIGKILL leaves behind: env.sh, and a lock file nobody holds.
    (root / ENV_FILE).write_text("export DREAMMASK_API_URL=http://127.0.0.1:1\nexport DREAMMASK_UP_PID=999999\n")
    (root / "up.lock").write_text("999999\n")
    r = cli("env", "--root", str(root))
    lines = error_lines(r)
    assert r.returncode == 1 and "no longer running" in lines[0] and "removed" in lines[0], r.stderr
    assert not (root / ENV_FILE).exists()
    r = cli("down", "--root", str(root))
    assert r.returncode == 1 and "no platform is running" in r.stderr


def test_the_key_is_kept_private_across_restarts(tmp_path):
    root = tmp_path / "platform"
    old = os.umask(0o022)
    try:
        key = stored_key(root)
    finally:
        os.umask(old)
    path = root / STATE_DIR / KEY_FILE
    assert len(key) >= 20 and path.read_text().strip() == key
    assert _mode(path) == 0o600 and _mode(root / STATE_DIR) == 0o700
    assert stored_key(root) == key
    path.chmod(0o644)  # e.g. restored from a backup
    assert stored_key(root) == key and _mode(path) == 0o600


def test_up_refuses_a_port_in_use_naming_it_before_starting_anything(tmp_path):
    root = tmp_path / "platform"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("up", "--root", str(root), "--port", str(port), "--services", "curation")
    lines = error_lines(r)
    assert r.returncode == 1 and f"port {port}" in lines[0] and "already in use" in lines[0], r.stderr
    assert f"--port {port + 1}" in r.stderr
    assert not (root / "logs").exists() and _Lock(root).holder() is None


class _FakePlatform:
    """Stands for LocalPlatform in `_serve`: two real process groups, stopped as the real one stops them."""

    def __init__(self, root, **kw):
        from dreammask.services.cli.harness import LocalPlatform

        self._real = LocalPlatform(root, services=())
        self.logs, self.api_url = Path(root) / "logs", "http://127.0.0.1:1"
        self.procs = self._real.procs

    def start(self):
        for name in ("api", "worker"):
            self._real._spawn(name, [sys.executable, "-c", "import time; time.sleep(600)"], dict(os.environ))
        return self

    def env(self):
        return {"DREAMMASK_REDIS_URL": "redis://127.0.0.1:1/0", "DREAMMASK_STORAGE_ROOT": "/nowhere"}

    def stop(self):
        self._real.stop()


@pytest.mark.parametrize("host, exposed", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_sigint_stops_up_even_when_it_came_in_ignored_and_0000_is_flagged(tmp_path, capsys, host, exposed):
    import threading

    from dreammask.services.cli.platform import PROCS_FILE, _serve
    from dreammask.services.cli.processes import group_alive

    root = tmp_path / "platform"
    lock = _Lock(root)
    lock.acquire()
    # As after `dreammask up &` from a script or under nohup: SIGINT ignored when the process started.
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    seen = {}

    def interrupt():
        procs = root / STATE_DIR / PROCS_FILE
        deadline = time.monotonic() + 30
        while not procs.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["procs"] = procs.read_text() if procs.exists() else ""
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Timer(0.1, interrupt)
    t.start()
    try:
        _serve(root, lock, _FakePlatform, port=8000, host=host, redis_url="redis://x", api_key="k",
               chosen=["curation"])
    finally:
        t.join()
        signal.signal(signal.SIGINT, before)
        lock.release()
    out = capsys.readouterr().out
    assert "stopping (Ctrl-C)" in out and "stopped." in out, out
    names = [line.split()[0] for line in seen["procs"].splitlines()]
    pids = [int(line.split()[1]) for line in seen["procs"].splitlines()]
    assert names == ["api", "worker"] and not (root / STATE_DIR / PROCS_FILE).exists()
    assert not any(group_alive(p) for p in pids)
    assert ("exposes the API" in out and "DREAMMASK_ALLOWED_HOSTS" in out and "TLS" in out) is exposed, out


_FAKE_UP = """
import os, signal, subprocess, sys, time
from pathlib import Path
from dreammask.services.cli.platform import PROCS_FILE, STATE_DIR, _Lock, _write_private
root, linger = Path(sys.argv[1]), sys.argv[2]
lock = _Lock(root)
lock.acquire()
(root / STATE_DIR).mkdir(exist_ok=True)
worker = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                           f"time.sleep({linger})"], start_new_session=True)
_write_private(root / STATE_DIR / PROCS_FILE, f"worker {worker.pid}\\n")
def stop(*_):
    lock.release()
    os._exit(0)  # leaves its worker finishing its task
signal.signal(signal.SIGTERM, stop)
print(worker.pid, flush=True)
while True:
    time.sleep(0.1)
"""


def _fake_up(root: Path, linger: float) -> tuple[subprocess.Popen, int]:
    """A stand-in for `up` that lets go of its lock at once on SIGTERM, leaving a worker that takes its time."""
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _FAKE_UP, str(root), str(linger)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    return proc, int(proc.stdout.readline())


def test_down_returns_once_every_process_up_started_has_exited(tmp_path):
    from dreammask.services.cli.processes import group_alive

    root = tmp_path / "platform"
    proc, worker = _fake_up(root, linger=2.5)
    try:
        t0 = time.monotonic()
        r = cli("down", "--root", str(root))
        assert r.returncode == 0 and "stopped." in r.stdout, r.stderr
        # `up` let go at once; its worker took its time, and `down` waited for it.
        assert time.monotonic() - t0 >= 1.5 and not group_alive(worker)
    finally:
        proc.wait(10)
        if group_alive(worker):
            os.killpg(worker, signal.SIGKILL)


def test_down_gives_up_after_its_timeout_naming_what_still_runs(tmp_path):
    from dreammask.services.cli.processes import group_alive

    root = tmp_path / "platform"
    proc, worker = _fake_up(root, linger=120)
    try:
        r = cli("down", "--root", str(root), "--timeout", "1")
        lines = error_lines(r)
        assert r.returncode == 1 and "still running after 1s" in lines[0] and f"worker ({worker})" in lines[0], r.stderr
        assert "--timeout" in r.stderr and "kill -KILL" in r.stderr
    finally:
        proc.wait(10)
        if group_alive(worker):
            os.killpg(worker, signal.SIGKILL)
