"""Running the `dreammask` command as a user does: its own process, its own environment."""

from __future__ import annotations

import os
import subprocess
import sys

# The bearer key of the API the CLI tests start (conftest.py), importable by test modules.
KEY = "cli-key"


def cli(*args: str, env: dict | None = None, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `dreammask <args>` as a user would, in its own process; stdout and stderr apart."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMMASK_")}
    full_env.update({"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "dreammask.services.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.strip()]
