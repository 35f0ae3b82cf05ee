"""What the preparation modules share: the datasets root, PNG/TIFF writing, panoptic segments."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from dreammask.shared.panoptic import id2rgb

from ..builtin import datasets_root


def root_of(root: str | os.PathLike | None) -> Path:
    base = datasets_root(root)
    if not base.is_dir():
        raise FileNotFoundError(f"datasets root {base} does not exist; pass --root or set DREAMMASK_DATASETS")
    return base


def need(path: Path, what: str) -> Path:
    """A release file or folder that must be there; the error says what to download."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {what}")
    return path


def save_label_map(labels: np.ndarray, path: Path) -> None:
    """uint8 maps as PNG, uint16 ones as TIFF (as FC-CLIP's scripts write them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels).save(path)


def bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


class PanopticWriter:
    """Collects one panoptic PNG per image (segment ids encoded as RGB) and the COCO panoptic JSON."""

    def __init__(self, png_dir: Path, categories: list[dict]):
        self.png_dir = png_dir
        self.categories = categories
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        png_dir.mkdir(parents=True, exist_ok=True)

    def add(self, image_id, image_file: str, height: int, width: int, ids: np.ndarray, segments: list[dict],
            png_name: str) -> None:
        """`ids` (H, W) segment ids (0 void); `segments` their COCO segments_info (id, category_id, iscrowd)."""
        present = set(np.unique(ids).tolist()) - {0}
        info = []
        for s in segments:
            if s["id"] not in present:
                continue  # overwritten by later segments
            mask = ids == s["id"]
            info.append({**s, "area": int(mask.sum()), "bbox": bbox(mask)})
        Image.fromarray(id2rgb(ids).astype(np.uint8)).save(self.png_dir / png_name)
        self.images.append({"id": image_id, "file_name": image_file, "height": int(height), "width": int(width)})
        self.annotations.append({"image_id": image_id, "file_name": png_name, "segments_info": info})

    def write(self, json_path: Path) -> None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"images": self.images, "annotations": self.annotations,
                                         "categories": self.categories}))
