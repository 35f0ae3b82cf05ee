"""Tools around the five services: the `dreammask` command (`main.py` and its command modules), the REST
client helpers (`client.py`), the demo, the local platform harness, the in-process runner and the workers'
health probe. Nothing in a service imports from here.

`app` is resolved lazily so that `python -m dreammask.services.cli.healthcheck` (a worker's liveness probe)
does not import Typer and every command module."""

from __future__ import annotations


def __getattr__(name: str):
    if name == "app":
        from .main import app

        return app
    raise AttributeError(name)
