"""The export formats are declared once (shared/formats.py): every name resolves to an exporter of that
name, and the job spec accepts exactly those names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dreammask.services.curation.exporters import Exporter, UnknownExporter, exporter_class
from dreammask.shared.formats import EXPORTERS
from dreammask.shared.schemas import JobSpec


def test_every_declared_format_resolves_to_its_exporter():
    for name in EXPORTERS:
        cls = exporter_class(name)
        assert issubclass(cls, Exporter) and cls.name == name
    with pytest.raises(UnknownExporter, match="known: card, coco_instances"):
        exporter_class("tiff")


def test_the_job_spec_takes_the_declared_names():
    assert JobSpec(train_categories=["dog"], exports=list(EXPORTERS)).export_formats == list(EXPORTERS)
    assert JobSpec(train_categories=["dog"], exports=["yolo"]).export_formats == ["card", "yolo"]
    with pytest.raises(ValidationError, match="exports"):
        JobSpec(train_categories=["dog"], exports=["tiff"])
