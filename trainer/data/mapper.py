"""Dataset dict -> model input: read the files, augment, build instance masks (training) or keep the
ground truth at full resolution (evaluation). Evaluation dicts may be semantic only (ADE20K-847, Pascal
Context): they carry `sem_seg_file_name` and no panoptic PNG."""

from __future__ import annotations

import numpy as np
import torch

from .coco_panoptic import read_image, read_panoptic, read_semantic, semantic_from_panoptic
from .transforms import LargeScaleJitter, ResizeShortestEdge

MAPPERS = ("coco_panoptic_lsj", "fixed")


class PanopticDatasetMapper:
    def __init__(self, is_train: bool, lsj: LargeScaleJitter | None = None,
                 test_resize: ResizeShortestEdge | None = None):
        self.is_train = is_train
        self.lsj = lsj
        self.test_resize = test_resize or ResizeShortestEdge(0)

    @classmethod
    def from_config(cls, cfg, is_train: bool, test_size: tuple[int, int] | None = None) -> PanopticDatasetMapper:
        """INPUT.DATASET_MAPPER_NAME "coco_panoptic_lsj": large-scale jitter; "fixed": images as they are.
        `test_size`: the dataset's own evaluation size (used when TEST.DATASET_SIZES is on)."""
        inp = cfg.INPUT
        mapper = str(inp.DATASET_MAPPER_NAME)
        if mapper not in MAPPERS:
            raise ValueError(f"INPUT.DATASET_MAPPER_NAME {mapper!r} is not one of {', '.join(MAPPERS)}")
        lsj = None
        if is_train and mapper == "coco_panoptic_lsj":
            flip = str(inp.RANDOM_FLIP)
            if flip not in ("horizontal", "none"):
                raise ValueError(f"INPUT.RANDOM_FLIP {flip!r} is not 'horizontal' or 'none'")
            lsj = LargeScaleJitter(int(inp.IMAGE_SIZE), float(inp.MIN_SCALE), float(inp.MAX_SCALE), flip == "horizontal")
        short, longest = int(inp.MIN_SIZE_TEST), int(inp.MAX_SIZE_TEST)
        if test_size is not None and bool(cfg.TEST.DATASET_SIZES):
            short, longest = int(test_size[0]), int(test_size[1])
        if mapper == "fixed":
            short = 0
        return cls(is_train, lsj, ResizeShortestEdge(short, longest))

    def __call__(self, d: dict, seed: int | None = None) -> dict:
        image = read_image(d["file_name"])
        out = {
            "file_name": d["file_name"], "image_id": d["image_id"],
            "height": image.shape[0], "width": image.shape[1],
            "is_synthetic": bool(d.get("is_synthetic", False)),
        }
        pan_file = d.get("pan_seg_file_name")
        ids = read_panoptic(pan_file) if pan_file else None
        if ids is not None and image.shape[:2] != ids.shape:
            raise ValueError(f"{d['file_name']}: image is {image.shape[:2]} but its panoptic PNG is {ids.shape}")
        if self.is_train:
            if ids is None:
                raise ValueError(f"{d['file_name']}: training needs a panoptic annotation (pan_seg_file_name)")
            if self.lsj is not None:
                image, ids, _valid = self.lsj(image, ids, np.random.default_rng(seed))
            classes, masks = [], []
            for s in d["segments_info"]:
                if s.get("iscrowd", 0):
                    continue
                m = ids == s["id"]
                if m.any():
                    classes.append(s["category_id"])
                    masks.append(m)
            h, w = ids.shape
            out["instances"] = {
                "gt_classes": torch.tensor(classes, dtype=torch.long),
                "gt_masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool),
            }
        else:
            # A dataset's own semantic annotation when it has one (ADE20K: ADEChallenge's, which FC-CLIP
            # scores on); otherwise the panoptic segments' classes.
            sem_file = d.get("sem_seg_file_name")
            if sem_file:
                sem = read_semantic(sem_file)
            elif ids is not None:
                sem = semantic_from_panoptic(ids, d["segments_info"])
            else:
                raise ValueError(f"{d['file_name']}: no annotation (pan_seg_file_name or sem_seg_file_name)")
            if sem.shape != image.shape[:2]:
                raise ValueError(f"{sem_file}: semantic annotation is {sem.shape}, the image {image.shape[:2]}")
            out["sem_seg"] = torch.from_numpy(sem)
            if ids is not None:
                out["pan_seg"] = (torch.from_numpy(ids), [dict(s) for s in d["segments_info"]])
            image = self.test_resize(image)
        out["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return out
