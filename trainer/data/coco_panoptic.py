"""COCO panoptic format: dataset dicts (detectron2's layout) and the id-encoded PNGs.

A dataset dict is what detectron2's DatasetCatalog returns for a panoptic dataset:
  {"file_name", "image_id", "height", "width", "pan_seg_file_name",
   "segments_info": [{"id", "category_id" (contiguous), "iscrowd", "isthing", "area", "bbox"}],
   "is_synthetic"}
Contiguous category ids index the dataset's class list (`DatasetMetadata.classes`), things and stuff in one
range, as in FC-CLIP and Mask2Former.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dreammask.shared.panoptic import id2rgb, rgb2id  # noqa: F401 (the encoding lives in shared/; re-exported)

VOID = 0  # panoptic id of unlabeled pixels
IGNORE_LABEL = 255  # semantic label of unlabeled pixels


@dataclass
class DatasetMetadata:
    """Class list and flags of a dataset, like detectron2's MetadataCatalog entry."""

    name: str
    classes: list[str]
    dataset_ids: list[int]  # the dataset's own category id of each contiguous class
    isthing: list[bool]
    # Novel: categories the platform synthesised (or unseen in training, for an evaluation dataset).
    is_novel: list[bool] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # Per class, its names for the text classifier and the seen rule: FC-CLIP's prompt-engineered list as it
    # is where a vocabulary file covers the dataset (data/vocabulary.py; `curated`), else the class name.
    synonyms: list[list[str]] = field(default_factory=list)
    curated: bool = False
    # Semantic ground-truth label of unlabelled pixels (255; 65535 for the uint16 ADE20K-847/PC-459 maps).
    ignore_label: int = 255
    # FC-CLIP's evaluation resize of this dataset (shorter side, longer-side cap), where its eval config
    # sets one (Cityscapes 1024/2560); None: INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST.
    test_size: tuple[int, int] | None = None

    def __post_init__(self):
        n = len(self.classes)
        if not self.is_novel:
            self.is_novel = [False] * n
        if not self.synonyms:
            self.synonyms = [[c] for c in self.classes]
        if len(self.synonyms) != n:
            raise ValueError(f"dataset {self.name}: {len(self.synonyms)} synonym lists for {n} classes")
        if not (len(self.dataset_ids) == len(self.isthing) == len(self.is_novel) == n):
            raise ValueError(f"dataset {self.name}: category lists of different lengths")
        if len(set(self.dataset_ids)) != n:
            raise ValueError(f"dataset {self.name}: duplicate category ids")

    @property
    def dataset_id_to_contiguous_id(self) -> dict[int, int]:
        return {d: i for i, d in enumerate(self.dataset_ids)}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_coco_categories(cls, name: str, categories: list[dict], novel_ids=()) -> DatasetMetadata:
        novel_ids = set(novel_ids)
        cats = sorted(categories, key=lambda c: c["id"])
        return cls(
            name=name,
            classes=[c["name"] for c in cats],
            dataset_ids=[int(c["id"]) for c in cats],
            isthing=[bool(c.get("isthing", 1)) for c in cats],
            is_novel=[bool(c.get("is_novel", False)) or int(c["id"]) in novel_ids for c in cats],
        )

    def with_vocabulary_file(self, vocabulary: str) -> DatasetMetadata:
        """Take each class's names from a shipped vocabulary file, matched by dataset id, or, where the ids
        differ (an export numbering its classes its own way), by the class's first name."""
        from .vocabulary import load_vocabulary_file, split_synonyms

        vf = load_vocabulary_file(vocabulary)
        by_id = vf.by_dataset_id()
        if any(d not in by_id for d in self.dataset_ids):
            by_name = {syns[0].lower(): syns for syns in vf.synonyms}
            firsts = [split_synonyms(c)[0].lower() if split_synonyms(c) else c for c in self.classes]
            missing = [c for c in firsts if c not in by_name]
            if missing:
                raise ValueError(
                    f"dataset {self.name}: classes {missing[:5]} match vocabulary {vocabulary!r} neither by id nor by name"
                )
            found = [by_name[f] for f in firsts]
        else:
            found = [by_id[d] for d in self.dataset_ids]
        # FC-CLIP's list as it is: the dataset's own name (COCO's "orange", "remote", ...) is not added back;
        # it still names the class in results.
        self.synonyms = [list(syns) for syns in found]
        self.curated = True
        return self

    def to_json(self) -> dict:
        return {
            "name": self.name, "classes": self.classes, "dataset_ids": self.dataset_ids,
            "isthing": self.isthing, "is_novel": self.is_novel, "synonyms": self.synonyms, "curated": self.curated,
        }


def _resolve(root: Path, base: Path | None, file_name: str) -> str:
    """A file named in the JSON: under its folder, or (platform exports) relative to the dataset root."""
    p = Path(file_name)
    if p.is_absolute():
        return str(p)
    cand = root / p
    if base is not None and not cand.exists():
        alt = base / p
        if alt.exists():
            return str(alt)
    return str(cand)


def load_coco_panoptic_json(
    json_file: str | os.PathLike | dict,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    metadata: DatasetMetadata | None = None,
    name: str = "coco_panoptic",
    default_synthetic: bool = False,
) -> tuple[list[dict], DatasetMetadata]:
    """Read a COCO panoptic JSON into dataset dicts; categories come from the JSON unless given."""
    if isinstance(json_file, dict):
        data = json_file
        base = None
    else:
        path = Path(json_file)
        if not path.is_file():
            raise FileNotFoundError(f"panoptic annotations {path} not found; check DATASETS.ROOT")
        data = json.loads(path.read_text())
        base = path.parent.parent  # the dataset root of the platform export layout (annotations/..)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{json_file if not isinstance(json_file, dict) else name}: not COCO panoptic, no {key!r}")
    if metadata is None:
        metadata = DatasetMetadata.from_coco_categories(name, data["categories"])
    to_contig = metadata.dataset_id_to_contiguous_id
    thing_by_dataset_id = {d: t for d, t in zip(metadata.dataset_ids, metadata.isthing)}
    image_root, panoptic_root = Path(image_root), Path(panoptic_root)
    images = {int(im["id"]) if str(im["id"]).isdigit() else im["id"]: im for im in data["images"]}
    dicts = []
    for ann in data["annotations"]:
        image_id = ann["image_id"]
        key = int(image_id) if str(image_id).isdigit() else image_id
        im = images.get(key)
        if im is None:
            raise ValueError(f"{name}: annotation for image {image_id!r} that is not in 'images'")
        segments = []
        for s in ann.get("segments_info", []):
            cid = int(s["category_id"])
            if cid not in to_contig:
                raise ValueError(f"{name}: segment of image {image_id!r} has unknown category {cid}")
            segments.append({
                "id": int(s["id"]),
                "category_id": to_contig[cid],
                "iscrowd": int(s.get("iscrowd", 0)),
                "isthing": bool(s.get("isthing", thing_by_dataset_id[cid])),
                "area": float(s.get("area", 0)),
                "bbox": list(s.get("bbox", [])),
            })
        dicts.append({
            "file_name": _resolve(image_root, base, im["file_name"]),
            "image_id": image_id,
            "height": int(im["height"]),
            "width": int(im["width"]),
            "pan_seg_file_name": _resolve(panoptic_root, base, ann["file_name"]),
            "segments_info": segments,
            "is_synthetic": bool(im.get("is_synthetic", default_synthetic)),
        })
    if not dicts:
        raise ValueError(f"{name}: the panoptic JSON has no annotated images")
    return dicts, metadata


def read_image(path: str) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_panoptic(path: str) -> np.ndarray:
    """Segment ids (H, W) int64 from an id-encoded PNG."""
    with Image.open(path) as im:
        return rgb2id(np.asarray(im.convert("RGB")))


def read_semantic(path: str) -> np.ndarray:
    """Class labels (H, W) int64 from a detectron2-format semantic PNG (contiguous ids, 255 = ignore), e.g.
    ADE20K's `annotations_detectron2` written by FC-CLIP's/Mask2Former's prepare_ade20k_sem_seg.py."""
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def semantic_from_panoptic(pan_ids: np.ndarray, segments_info: list[dict]) -> np.ndarray:
    """Per-pixel contiguous class (IGNORE_LABEL where unlabeled), crowd regions included."""
    sem = np.full(pan_ids.shape, IGNORE_LABEL, dtype=np.int64)
    for s in segments_info:
        sem[pan_ids == s["id"]] = s["category_id"]
    return sem
