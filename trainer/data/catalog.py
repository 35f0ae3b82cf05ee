"""A small dataset catalog in detectron2's style: names -> functions returning dataset dicts and metadata.

Where detectron2 is installed, trainer/d2 registers the same functions in its own DatasetCatalog.
"""

from __future__ import annotations

from collections.abc import Callable

from .coco_panoptic import DatasetMetadata

# name -> () -> (dicts, metadata)
_LOADERS: dict[str, Callable[[], tuple[list[dict], DatasetMetadata]]] = {}
# Resolvers for parameterised names ("synthetic:<dataset id>"): prefix -> (suffix) -> (dicts, metadata)
_PREFIXES: dict[str, Callable[[str], tuple[list[dict], DatasetMetadata]]] = {}


class DatasetCatalog:
    @staticmethod
    def register(name: str, loader: Callable[[], tuple[list[dict], DatasetMetadata]]) -> None:
        if name in _LOADERS:
            raise ValueError(f"dataset {name!r} is already registered")
        _LOADERS[name] = loader

    @staticmethod
    def register_prefix(prefix: str, resolver: Callable[[str], tuple[list[dict], DatasetMetadata]]) -> None:
        _PREFIXES[prefix] = resolver

    @staticmethod
    def remove(name: str) -> None:
        _LOADERS.pop(name, None)

    @staticmethod
    def names() -> list[str]:
        return sorted(_LOADERS) + [f"{p}:<id>" for p in sorted(_PREFIXES)]

    @staticmethod
    def get(name: str) -> tuple[list[dict], DatasetMetadata]:
        """Dataset dicts and metadata of a registered name (or "prefix:suffix")."""
        if name in _LOADERS:
            return _LOADERS[name]()
        if ":" in name:
            prefix, suffix = name.split(":", 1)
            if prefix in _PREFIXES:
                return _PREFIXES[prefix](suffix)
        raise KeyError(f"dataset {name!r} is not registered; registered: {DatasetCatalog.names()}")
