"""YOLO segmentation, the Ultralytics layout: `labels/{scene}.txt` beside `images/{scene}.png`, one line per
instance `class x1 y1 x2 y2 ...` (class: 0-based index into `names`; the outline of its mask, normalised to
[0, 1]), and `data.yaml` at the dataset root (`train`/`val`: images, `names`). Written per scene at
curation time; `data.yaml` by the assemble step."""

from __future__ import annotations

import yaml

from dreammask.shared import keys

from ..sample import Sample
from .base import ExportContext, Exporter


def class_index(ctx: ExportContext) -> dict[int, int]:
    return {c.id: i for i, c in enumerate(ctx.categories)}


class YoloSegmentationExporter(Exporter):
    name = "yolo"

    def write_scene(self, ctx: ExportContext, sample: Sample) -> list[str]:
        index = class_index(ctx)
        lines = []
        for inst in sample.instances:
            if len(inst.polygon) >= 6:
                coords = " ".join(f"{min(max(v, 0.0), 1.0):.6f}" for v in inst.polygon)
                lines.append(f"{index[inst.category_id]} {coords}")
        rel = f"{keys.YOLO_LABELS_DIR}/{sample.scene_id}.txt"
        ctx.store.put_bytes(ctx.key(rel), ("\n".join(lines) + ("\n" if lines else "")).encode(), "text/plain")
        return [rel]

    def finish(self, ctx: ExportContext) -> dict[str, str]:
        # No `path`: Ultralytics then resolves train/val against the folder holding data.yaml.
        data = {"train": keys.IMAGES_DIR, "val": keys.IMAGES_DIR,
                "names": {i: c.name for i, c in enumerate(ctx.categories)}}
        ctx.store.put_bytes(ctx.key(keys.YOLO_DATA), yaml.safe_dump(data, sort_keys=False).encode(), "text/yaml")
        return {"yolo_data": ctx.key(keys.YOLO_DATA), "yolo_labels_dir": ctx.prefix + keys.YOLO_LABELS_DIR + "/"}
