"""Backend registries, one per stage, like diffusers' schedulers: swappable by name.

Backends register lazily by import path ("module:Class"), so a process imports torch, diffusers or
segment-anything only for the backends it actually uses. A process builds each backend once
(`get_backend`) and keeps it: models load once per worker process, never per task.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from .chain import DEFAULT_CHAIN

# The backend registries, as the chain's stages declare them (`StageDef.backends`), and which worker queue
# runs each: a backend is preloaded by the workers of the service whose stage draws from it.
BACKEND_STAGES = tuple(b for st in DEFAULT_CHAIN for b in st.backends)
QUEUE_OF_STAGE = {b: st.queue for st in DEFAULT_CHAIN for b in st.backends}



def backend_packages(chain=DEFAULT_CHAIN) -> tuple[str, ...]:
    """The packages whose import registers the built-in backends: `services/<service>/backends/` of each
    service whose stages draw from a registry (their __init__ must stay light)."""
    return tuple(f"dreammask.services.{svc}.backends" for svc in chain.services
                 if any(st.backends for st in chain.stages_of(svc)))


def backend_stages_of(service: str, chain=DEFAULT_CHAIN) -> tuple[str, ...]:
    """The backend registries the stages `service` runs draw from: what its workers preload."""
    return tuple(b for st in chain.stages_of(service) for b in st.backends)


BUILTIN_BACKEND_PACKAGES = backend_packages()


class UnknownBackend(LookupError):
    pass


class Registry:
    def __init__(self, stage: str):
        self.stage = stage
        self._entries: dict[str, Any] = {}  # name -> class or "module:Class"

    def register(self, name: str, target: Any = None):
        """`register("x", "pkg.mod:Cls")` lazily, or `@register("x")` on a class."""
        if target is not None:
            self._entries[name] = target
            return target

        def deco(cls):
            self._entries[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> type:
        try:
            target = self._entries[name]
        except KeyError:
            raise UnknownBackend(
                f"no {self.stage} backend named {name!r}; known: {', '.join(self.names()) or 'none'}"
            ) from None
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            self._entries[name] = target
        return target


REGISTRIES: dict[str, Registry] = {stage: Registry(stage) for stage in BACKEND_STAGES}

_loaded = False
_load_lock = threading.Lock()
_instances: dict[tuple[str, str], Any] = {}
_instances_lock = threading.Lock()


def register_backend(stage: str, name: str, target: Any = None):
    return REGISTRIES[stage].register(name, target)


def load_backend_plugins(settings=None) -> None:
    """Import the built-in backend packages and the configured plugins (once per process)."""
    global _loaded
    with _load_lock:
        if _loaded:
            return
        from .settings import get_settings

        s = settings or get_settings()
        for module in (*BUILTIN_BACKEND_PACKAGES, *s.plugins):
            importlib.import_module(module)
        _loaded = True


def backend_class(stage: str, name: str) -> type:
    load_backend_plugins()
    return REGISTRIES[stage].get(name)


def get_backend(stage: str, name: str, settings=None):
    """The process-wide instance of a backend, built (and its models loaded) on first use."""
    key = (stage, name)
    inst = _instances.get(key)
    if inst is not None:
        return inst
    with _instances_lock:
        inst = _instances.get(key)
        if inst is None:
            from .settings import get_settings

            cls = backend_class(stage, name)
            inst = cls.from_settings(settings or get_settings())
            inst.warmup()
            _instances[key] = inst
    return inst


def loaded_backends() -> dict[tuple[str, str], Any]:
    return dict(_instances)


def close_backends() -> None:
    """Release every backend's models (worker shutdown)."""
    with _instances_lock:
        for inst in _instances.values():
            try:
                inst.close()
            except Exception:  # noqa: BLE001 - shutdown must go on
                pass
        _instances.clear()
