"""Name -> class registries (detectron2 convention), so configs pick components by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
    """A named table of classes/functions filled with `@REGISTRY.register()`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: dict[str, Any] = {}

    def register(self, obj: Any = None, *, name: str | None = None) -> Any:
        if obj is None:

            def deco(func_or_class: Callable) -> Callable:
                self._do_register(name or func_or_class.__name__, func_or_class)
                return func_or_class

            return deco
        self._do_register(name or obj.__name__, obj)
        return obj

    def _do_register(self, name: str, obj: Any) -> None:
        if name in self._obj_map and self._obj_map[name] is not obj:
            raise KeyError(f"{name!r} is already registered in the {self._name} registry")
        self._obj_map[name] = obj

    def get(self, name: str) -> Any:
        try:
            return self._obj_map[name]
        except KeyError:
            raise KeyError(f"no {self._name} named {name!r}; registered: {sorted(self._obj_map)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map

    def __iter__(self):
        return iter(self._obj_map.items())

    def __repr__(self) -> str:
        return f"Registry({self._name!r}, {sorted(self._obj_map)})"


META_ARCH_REGISTRY = Registry("META_ARCH")
BACKBONE_REGISTRY = Registry("BACKBONE")
PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_DECODER")
