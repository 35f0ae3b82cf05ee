"""Dataset exporters, one file each, registered by name and built lazily (like the stage backends).

A job names the formats it wants in `JobSpec.exports` (default: all of `EXPORT_FORMATS`; the card always).
To add one: write an `Exporter` subclass in this folder, register it below, and add its name to
`EXPORT_FORMATS` in shared/schemas.py (the job spec validates names against that list)."""

from __future__ import annotations

import importlib

from dreammask.shared.schemas import EXPORT_FORMATS

from .base import ExportContext, Exporter, JsonStream

_REGISTRY: dict[str, str | type[Exporter]] = {
    "coco_instances": "dreammask.services.curation.exporters.coco_instances:CocoInstancesExporter",
    "coco_panoptic": "dreammask.services.curation.exporters.coco_panoptic:CocoPanopticExporter",
    "processed_dataset": "dreammask.services.curation.exporters.processed:ProcessedDatasetExporter",
    "card": "dreammask.services.curation.exporters.card:CardExporter",
    "yolo": "dreammask.services.curation.exporters.yolo:YoloSegmentationExporter",
    "hf_parquet": "dreammask.services.curation.exporters.hf_parquet:HFParquetExporter",
}


class UnknownExporter(LookupError):
    pass


def register_exporter(name: str, target: str | type[Exporter]) -> None:
    _REGISTRY[name] = target


def exporter_class(name: str) -> type[Exporter]:
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise UnknownExporter(f"no exporter {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = target
    return target


def build_exporters(names: list[str]) -> list[Exporter]:
    return [exporter_class(n)() for n in names]


def available() -> list[str]:
    return [n for n in EXPORT_FORMATS if n in _REGISTRY]


__all__ = ["ExportContext", "Exporter", "JsonStream", "build_exporters", "exporter_class", "register_exporter",
           "available", "UnknownExporter"]
