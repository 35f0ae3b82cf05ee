"""Dataset dict -> model input: read the files, augment, build instance masks (training) or keep the
ground truth at full resolution (evaluation)."""

from __future__ import annotations

import numpy as np
import torch

from .coco_panoptic import read_image, read_panoptic, read_semantic, semantic_from_panoptic
from .transforms import LargeScaleJitter, ResizeShortestEdge


class PanopticDatasetMapper:
    def __init__(self, is_train: bool, lsj: LargeScaleJitter | None = None,
                 test_resize: ResizeShortestEdge | None = None):
        self.is_train = is_train
        self.lsj = lsj
        self.test_resize = test_resize or ResizeShortestEdge(0)

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> PanopticDatasetMapper:
        """INPUT.DATASET_MAPPER_NAME "coco_panoptic_lsj": large-scale jitter; "fixed": images as they are."""
        inp = cfg.INPUT
        mapper = str(inp.get("DATASET_MAPPER_NAME", "coco_panoptic_lsj"))
        if mapper not in ("coco_panoptic_lsj", "fixed"):
            raise ValueError(f"INPUT.DATASET_MAPPER_NAME {mapper!r} is not 'coco_panoptic_lsj' or 'fixed'")
        lsj = None
        if is_train and mapper == "coco_panoptic_lsj":
            flip = str(inp.get("RANDOM_FLIP", "horizontal"))
            if flip not in ("horizontal", "none"):
                raise ValueError(f"INPUT.RANDOM_FLIP {flip!r} is not 'horizontal' or 'none'")
            lsj = LargeScaleJitter(int(inp.IMAGE_SIZE), float(inp.MIN_SCALE), float(inp.MAX_SCALE), flip == "horizontal")
        test_size = inp.get("MIN_SIZE_TEST", 0)
        if isinstance(test_size, (list, tuple)):
            test_size = test_size[-1]
        if mapper == "fixed":
            test_size = 0
        return cls(is_train, lsj, ResizeShortestEdge(int(test_size), int(inp.get("MAX_SIZE_TEST", 2560))))

    def __call__(self, d: dict, seed: int | None = None) -> dict:
        image = read_image(d["file_name"])
        ids = read_panoptic(d["pan_seg_file_name"])
        if image.shape[:2] != ids.shape:
            raise ValueError(
                f"{d['file_name']}: image is {image.shape[:2]} but its panoptic PNG is {ids.shape}"
            )
        out = {
            "file_name": d["file_name"], "image_id": d["image_id"],
            "height": image.shape[0], "width": image.shape[1],
            "is_synthetic": bool(d.get("is_synthetic", False)),
        }
        if self.is_train:
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
            sem = read_semantic(sem_file) if sem_file else semantic_from_panoptic(ids, d["segments_info"])
            if sem.shape != ids.shape:
                raise ValueError(f"{sem_file}: semantic annotation is {sem.shape}, the panoptic PNG {ids.shape}")
            out["sem_seg"] = torch.from_numpy(sem)
            out["pan_seg"] = (torch.from_numpy(ids), [dict(s) for s in d["segments_info"]])
            image, _ = self.test_resize(image, ids)
        out["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return out
