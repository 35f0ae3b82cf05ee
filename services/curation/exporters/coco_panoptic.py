"""COCO panoptic: one PNG per image (`panoptic/{scene}.png`, ids encoded R + 256·G + 256²·B, written per
scene at curation time) and `annotations/panoptic.json` with each image's `segments_info`."""

from __future__ import annotations

from dreammask.shared import keys
from dreammask.shared.masks import png_bytes
from dreammask.shared.panoptic import id2rgb
from dreammask.shared.schemas import CuratedScene

from ..categories import coco_category
from ..sample import Sample
from .base import ExportContext, Exporter, JsonStream
from .coco_instances import coco_image, dataset_info


def panoptic_file(scene_id: str) -> str:
    return f"{keys.PANOPTIC_DIR}/{scene_id}.png"


class CocoPanopticExporter(Exporter):
    name = "coco_panoptic"

    def write_scene(self, ctx: ExportContext, sample: Sample) -> list[str]:
        rel = panoptic_file(sample.scene_id)
        ctx.store.put_bytes(ctx.key(rel), png_bytes(id2rgb(sample.seg_map)), "image/png")
        return [rel]

    def start(self, ctx: ExportContext) -> None:
        self.stream = JsonStream(ctx, ["images", "annotations"])

    def add(self, ctx: ExportContext, rec: CuratedScene) -> None:
        if not rec.kept:
            return
        self.stream.add("images", coco_image(ctx, rec))
        segments = [{"id": i.segment_id, "category_id": i.category_id, "area": i.visible_area,
                     "bbox": i.visible_bbox, "iscrowd": 0, "isthing": i.isthing}
                    for i in rec.instances if i.visible_area > 0]
        self.stream.add("annotations", {"image_id": ctx.image_id(rec.scene_id),
                                        "file_name": panoptic_file(rec.scene_id), "segments_info": segments})

    def finish(self, ctx: ExportContext) -> dict[str, str]:
        self.stream.upload(ctx.key(keys.COCO_PANOPTIC), {"info": dataset_info(ctx)},
                           {"categories": [coco_category(c) for c in ctx.categories]})
        return {"coco_panoptic": ctx.key(keys.COCO_PANOPTIC), "panoptic_dir": ctx.prefix + keys.PANOPTIC_DIR + "/"}
