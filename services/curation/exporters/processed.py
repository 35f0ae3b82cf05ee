"""The `processed_dataset/` layout: per scene a label map (`masks/{scene}.png`, value k = the object with
`mask_value` k) and `scene_{scene}.json`; the image is the dataset's `images/{scene}.png` (stored once)."""

from __future__ import annotations

import numpy as np

from dreammask.shared import keys
from dreammask.shared.masks import png_bytes

from ..sample import Sample
from .base import ExportContext, Exporter


class ProcessedDatasetExporter(Exporter):
    name = "processed_dataset"

    def write_scene(self, ctx: ExportContext, sample: Sample) -> list[str]:
        sid = sample.scene_id
        mask_rel = f"{keys.PROCESSED_DIR}/masks/{sid}.png"
        scene_rel = f"{keys.PROCESSED_DIR}/scene_{sid}.json"
        ctx.store.put_bytes(ctx.key(mask_rel), png_bytes(sample.seg_map.clip(0, 255).astype(np.uint8)), "image/png")
        h, w = sample.seg_map.shape
        ctx.store.put_json(ctx.key(scene_rel), {
            "scene_id": sid, "image": f"../{keys.IMAGES_DIR}/{sid}.png", "mask": f"masks/{sid}.png",
            "is_synthetic": True, "novel_category": sample.novel_category, "caption": sample.caption,
            "width": w, "height": h,
            "objects": [{"mask_value": i.segment_id, "category": i.category, "category_id": i.category_id,
                         "is_novel": i.is_novel, "isthing": i.isthing, "bbox_xyxy": i.prompt_bbox,
                         "area": i.visible_area, "scores": i.scores} for i in sample.instances],
        })
        return [mask_rel, scene_rel]

    def finish(self, ctx: ExportContext) -> dict[str, str]:
        return {"processed_dataset": ctx.prefix + keys.PROCESSED_DIR + "/"}
