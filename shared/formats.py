"""The dataset export formats, by name: the one table a new format is added to. Each names its exporter class
("module:Class", in services/curation/exporters/), imported by the curation service only when a job asks for
the format. The job spec validates `exports` against these names (shared/schemas.py); how to add a format:
docs/extending.md."""

from __future__ import annotations

_E = "dreammask.services.curation.exporters"

EXPORTERS: dict[str, str] = {
    "coco_instances": f"{_E}.coco_instances:CocoInstancesExporter",
    "coco_panoptic": f"{_E}.coco_panoptic:CocoPanopticExporter",
    "processed_dataset": f"{_E}.processed:ProcessedDatasetExporter",
    "card": f"{_E}.card:CardExporter",  # always written
    "yolo": f"{_E}.yolo:YoloSegmentationExporter",
    "hf_parquet": f"{_E}.hf_parquet:HFParquetExporter",
}
