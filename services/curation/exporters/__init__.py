"""Dataset exporters, one file each, declared by name in shared/formats.py and built lazily (like the stage
backends). A job names the formats it wants in `JobSpec.exports` (default: all; the card always). To add
one: write an `Exporter` subclass in this folder and add its name and class to shared/formats.py
(docs/extending.md)."""

from __future__ import annotations

import importlib

from dreammask.shared.formats import EXPORTERS

from .base import ExportContext, Exporter, JsonStream

_classes: dict[str, type[Exporter]] = {}


class UnknownExporter(LookupError):
    pass


def exporter_class(name: str) -> type[Exporter]:
    cls = _classes.get(name)
    if cls is None:
        try:
            target = EXPORTERS[name]
        except KeyError:
            raise UnknownExporter(f"no exporter {name!r}; known: {', '.join(sorted(EXPORTERS))}") from None
        module, _, attr = target.partition(":")
        cls = _classes[name] = getattr(importlib.import_module(module), attr)
    return cls


def build_exporters(names: list[str]) -> list[Exporter]:
    return [exporter_class(n)() for n in names]


__all__ = ["ExportContext", "Exporter", "JsonStream", "build_exporters", "exporter_class", "UnknownExporter"]
