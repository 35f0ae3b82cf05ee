"""Dataset export: COCO instances (RLE), COCO panoptic (PNGs + JSON), the `processed_dataset/` layout,
a dataset card and a contact sheet. Every sample is marked `is_synthetic`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from dreammask.shared import keys
from dreammask.shared.masks import decode_rle, load_rgb, png_bytes
from dreammask.shared.panoptic import id2rgb
from dreammask.shared.schemas import (
    CategorySet,
    DatasetCategory,
    SceneAnnotation,
    SceneDecision,
    SceneLayout,
)
from dreammask.shared.storage import ObjectStore

from .contact_sheet import contact_sheet, draw_scene

HIST_BINS = 10


@dataclass
class ExportResult:
    files: dict[str, str]
    images: int
    instances: int
    card: dict = field(default_factory=dict)


def build_categories(cats: CategorySet, thing_flags: dict[str, bool] | None = None) -> list[DatasetCategory]:
    thing_flags = thing_flags or {}
    out = []
    for i, name in enumerate(cats.train):
        out.append(DatasetCategory(id=i + 1, name=name, is_novel=False, isthing=int(thing_flags.get(name, True))))
    for j, n in enumerate(cats.novel):
        out.append(DatasetCategory(id=len(cats.train) + j + 1, name=n.name, is_novel=True, isthing=1))
    return out


def _histogram(values: list[float]) -> dict:
    counts, edges = np.histogram(np.clip(values, 0, 1), bins=HIST_BINS, range=(0.0, 1.0)) if values else (
        np.zeros(HIST_BINS, int), np.linspace(0, 1, HIST_BINS + 1))
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def export_dataset(
    store: ObjectStore,
    dataset_id: str,
    cats: CategorySet,
    scenes: list[tuple[SceneAnnotation, SceneLayout | None, SceneDecision]],
    *,
    metric_of,
    summary: dict,
    thing_flags: dict[str, bool] | None = None,
    max_sheet_tiles: int = 40,
) -> ExportResult:
    categories = build_categories(cats, thing_flags)
    cat_id = {c.name: c.id for c in categories}
    f = lambda rel: keys.dataset_file(dataset_id, rel)  # noqa: E731
    prefix = keys.dataset_prefix(dataset_id)

    coco_images, coco_anns, pan_anns = [], [], []
    per_cat = defaultdict(lambda: {"images": 0, "instances": 0})
    all_scores: dict[str, list[float]] = defaultdict(list)
    kept_scores: dict[str, list[float]] = defaultdict(list)
    tiles = []
    ann_id = 0
    for ann, layout, decision in scenes:
        kept_ids = {d.instance_id: d.kept for d in decision.instances}
        for inst in ann.instances:
            metric = metric_of(inst)
            if metric in inst.scores:
                all_scores[metric].append(inst.scores[metric])
                if decision.kept and kept_ids.get(inst.instance_id):
                    kept_scores[metric].append(inst.scores[metric])
        if not decision.kept:
            continue
        image_id = len(coco_images) + 1
        sid = ann.scene_id
        raw = store.get_bytes(ann.image_key)
        image = load_rgb(raw)
        h, w = image.shape[:2]
        img_rel = f"{keys.IMAGES_DIR}/{sid}.png"
        store.put_bytes(f(img_rel), raw, "image/png")
        store.put_bytes(f(f"{keys.PROCESSED_DIR}/images/{sid}.png"), raw, "image/png")
        coco_images.append({
            "id": image_id, "file_name": img_rel, "width": w, "height": h, "is_synthetic": True,
            "scene_id": sid, "novel_category": layout.novel_category if layout else None,
            "caption": layout.caption if layout else None,
        })
        # Panoptic: larger instances painted first, so smaller ones in front stay visible.
        kept_insts = [i for i in ann.instances if kept_ids.get(i.instance_id)]
        seg_map = np.zeros((h, w), np.int32)
        for seg_index, inst in sorted(enumerate(kept_insts, start=1), key=lambda t: -t[1].area):
            seg_map[decode_rle(inst.mask.model_dump())] = seg_index
        segments, objects = [], []
        seen_cats = set()
        for seg_index, inst in enumerate(kept_insts, start=1):
            visible = seg_map == seg_index
            area = int(visible.sum())
            full = decode_rle(inst.mask.model_dump())
            ys, xs = np.nonzero(full)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)] \
                if len(xs) else [0, 0, 0, 0]
            ann_id += 1
            metric = metric_of(inst)
            coco_anns.append({
                "id": ann_id, "image_id": image_id, "category_id": cat_id[inst.category],
                "segmentation": inst.mask.model_dump(), "area": int(full.sum()), "bbox": bbox, "iscrowd": 0,
                "is_synthetic": True, "score": inst.scores.get(metric), "scores": inst.scores,
            })
            if area > 0:
                ys, xs = np.nonzero(visible)
                segments.append({
                    "id": seg_index, "category_id": cat_id[inst.category], "area": area,
                    "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                    "iscrowd": 0, "isthing": next(c.isthing for c in categories if c.name == inst.category),
                })
            objects.append({
                "mask_value": seg_index, "category": inst.category, "category_id": cat_id[inst.category],
                "is_novel": inst.is_novel, "bbox_xyxy": inst.bbox, "area": area, "scores": inst.scores,
            })
            per_cat[inst.category]["instances"] += 1
            seen_cats.add(inst.category)
        for c in seen_cats:
            per_cat[c]["images"] += 1
        rgb = id2rgb(seg_map)
        pan_rel = f"{keys.PANOPTIC_DIR}/{sid}.png"
        store.put_bytes(f(pan_rel), png_bytes(rgb), "image/png")
        pan_anns.append({"image_id": image_id, "file_name": pan_rel, "segments_info": segments})
        store.put_bytes(f(f"{keys.PROCESSED_DIR}/masks/{sid}.png"), png_bytes(seg_map.clip(0, 255).astype(np.uint8)),
                        "image/png")
        store.put_json(f(f"{keys.PROCESSED_DIR}/scene_{sid}.json"), {
            "scene_id": sid, "image": f"images/{sid}.png", "mask": f"masks/{sid}.png", "is_synthetic": True,
            "novel_category": layout.novel_category if layout else None,
            "caption": layout.caption if layout else None, "width": w, "height": h, "objects": objects,
        })
        if len(tiles) < max_sheet_tiles:
            tiles.append(draw_scene(image, ann, kept_ids, title=sid))

    coco_categories = [
        {"id": c.id, "name": c.name, "supercategory": "novel" if c.is_novel else "train",
         "is_novel": c.is_novel, "isthing": c.isthing} for c in categories
    ]
    info = {"description": f"DreamMask synthetic dataset {dataset_id}", "is_synthetic": True}
    store.put_json(f(keys.COCO_INSTANCES), {"info": info, "images": coco_images, "annotations": coco_anns,
                                            "categories": coco_categories})
    store.put_json(f(keys.COCO_PANOPTIC), {"info": info, "images": coco_images, "annotations": pan_anns,
                                           "categories": coco_categories})
    card = {
        "dataset_id": dataset_id,
        "images": len(coco_images),
        "instances": len(coco_anns),
        "scenes_annotated": len(scenes),
        "categories": {name: dict(v) for name, v in sorted(per_cat.items())},
        "novel_categories": [n.name for n in cats.novel],
        "score_histograms": {
            m: {"all": _histogram(v), "kept": _histogram(kept_scores.get(m, []))} for m, v in all_scores.items()
        },
        "selection": summary,
    }
    store.put_json(f(keys.CARD_JSON), card)
    store.put_bytes(f(keys.CARD_MD), render_card_md(card).encode(), "text/markdown")
    sheet = contact_sheet(tiles, caption=f"{dataset_id}: {len(coco_images)} images kept of {len(scenes)} annotated")
    store.put_bytes(f(keys.CONTACT_SHEET), png_bytes(sheet), "image/png")
    files = {
        "coco_instances": f(keys.COCO_INSTANCES), "coco_panoptic": f(keys.COCO_PANOPTIC),
        "panoptic_dir": prefix + keys.PANOPTIC_DIR + "/", "images_dir": prefix + keys.IMAGES_DIR + "/",
        "processed_dataset": prefix + keys.PROCESSED_DIR + "/", "card": f(keys.CARD_JSON), "card_md": f(keys.CARD_MD),
        "selection": f(keys.DECISIONS), "contact_sheet": f(keys.CONTACT_SHEET),
    }
    return ExportResult(files=files, images=len(coco_images), instances=len(coco_anns), card=card)


def render_card_md(card: dict) -> str:
    lines = [f"# Dataset card: {card['dataset_id']}", "",
             "Synthetic images (every sample `is_synthetic: true`) made by the DreamMask platform.", "",
             f"- images kept: {card['images']} of {card['scenes_annotated']} annotated scenes",
             f"- instances kept: {card['instances']}",
             f"- novel categories: {', '.join(card['novel_categories'])}", "",
             "## Instances per category", "", "| category | images | instances |", "|---|---|---|"]
    for name, v in card["categories"].items():
        lines.append(f"| {name} | {v['images']} | {v['instances']} |")
    sel = card.get("selection", {})
    lines += ["", "## Selection", ""]
    for k, v in sel.items():
        lines.append(f"- {k}: {v}")
    for metric, h in card["score_histograms"].items():
        lines += ["", f"## Score histogram: {metric}", "", "| bin | all | kept |", "|---|---|---|"]
        for i, c in enumerate(h["all"]["counts"]):
            lines.append(f"| {h['all']['edges'][i]:.1f}-{h['all']['edges'][i + 1]:.1f} | {c} | {h['kept']['counts'][i]} |")
    return "\n".join(lines) + "\n"

