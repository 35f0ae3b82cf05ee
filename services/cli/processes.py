"""Whether a process or a process group is still alive: `dreammask up`/`down` and the harness wait on them
(a stopped leader can leave its group's children, Celery's pool processes, holding ports)."""

from __future__ import annotations

import os
from pathlib import Path


def _proc_states(match) -> bool:
    """Whether a live (not zombie) process satisfies `match(pid, pgid)`, from /proc (Linux)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after its end.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and match(int(d.name), int(fields[2])):
            return True
    return False


def _signal_zero(send, target: int) -> bool:
    """Not Linux: a signal 0 tells whether the process or group exists (zombies included)."""
    try:
        send(target, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def process_alive(pid: int) -> bool:
    if not Path("/proc").is_dir():
        return _signal_zero(os.kill, pid)
    return _proc_states(lambda p, _g: p == pid)


def group_alive(pgid: int) -> bool:
    if not Path("/proc").is_dir():
        return _signal_zero(os.killpg, pgid)
    return _proc_states(lambda _p, g: g == pgid)
