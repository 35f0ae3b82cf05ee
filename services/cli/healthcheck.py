"""Container health check for workers: exit 0 when the worker's heartbeat file is fresh.

    python -m dreammask.services.cli.healthcheck --max-age 120
"""

from __future__ import annotations

import argparse
import sys
import time

from dreammask.shared.worker import heartbeat_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--max-age", type=float, default=120.0, help="seconds since the last heartbeat")
    args = p.parse_args(argv)
    path = heartbeat_file()
    try:
        age = time.time() - float(path.read_text().strip() or 0)
    except (OSError, ValueError):
        print(f"unhealthy: no heartbeat at {path}")
        return 1
    if age > args.max_age:
        print(f"unhealthy: last heartbeat {age:.0f}s ago")
        return 1
    print(f"healthy: heartbeat {age:.0f}s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
