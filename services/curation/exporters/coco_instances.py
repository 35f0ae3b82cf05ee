"""COCO instances (`annotations/instances.json`): RLE masks, pixel boxes, every sample `is_synthetic`."""

from __future__ import annotations

from dreammask.shared import keys
from dreammask.shared.schemas import CuratedScene

from ..categories import coco_category
from .base import ExportContext, Exporter, JsonStream


def coco_image(ctx: ExportContext, rec: CuratedScene) -> dict:
    return {"id": ctx.image_id(rec.scene_id), "file_name": rec.dataset_image, "width": rec.width,
            "height": rec.height, "is_synthetic": True, "scene_id": rec.scene_id,
            "novel_category": rec.novel_category, "caption": rec.caption}


def dataset_info(ctx: ExportContext) -> dict:
    return {"description": f"DreamMask synthetic dataset {ctx.dataset_id}", "is_synthetic": True,
            "job_id": ctx.job_id}


class CocoInstancesExporter(Exporter):
    name = "coco_instances"

    def start(self, ctx: ExportContext) -> None:
        self.stream = JsonStream(ctx, ["images", "annotations"])
        self.next_id = 1

    def add(self, ctx: ExportContext, rec: CuratedScene) -> None:
        if not rec.kept:
            return
        self.stream.add("images", coco_image(ctx, rec))
        for inst in rec.instances:
            self.stream.add("annotations", {
                "id": self.next_id, "image_id": ctx.image_id(rec.scene_id), "category_id": inst.category_id,
                "segmentation": inst.segmentation.model_dump(), "area": inst.area, "bbox": inst.bbox,
                "iscrowd": 0, "is_synthetic": True, "score": inst.score, "scores": inst.scores,
            })
            self.next_id += 1

    def finish(self, ctx: ExportContext) -> dict[str, str]:
        self.stream.upload(ctx.key(keys.COCO_INSTANCES), {"info": dataset_info(ctx)},
                           {"categories": [coco_category(c) for c in ctx.categories]})
        return {"coco_instances": ctx.key(keys.COCO_INSTANCES), "images_dir": ctx.prefix + keys.IMAGES_DIR + "/"}
