"""The standard datasets the trainer knows by name: where each lives under the datasets root (what the
preparation commands write, `python -m dreammask.trainer.data.prepare <dataset>`), its class list
(FC-CLIP's, data/vocabularies/), its evaluation size and ignore label. No torch: the API checks names and
files against this table.

COCO panoptic trains and evaluates; the others are the zero-shot evaluation sets, their label lists for
evaluation only (services never import the trainer; see docs/training.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    vocabulary: str  # a file of data/vocabularies/
    image_root: str  # relative to the datasets root
    panoptic_json: str | None = None  # COCO panoptic JSON (panoptic datasets)
    panoptic_root: str | None = None
    sem_seg_root: str | None = None  # semantic label maps, named like the images
    image_ext: str = ".jpg"
    sem_seg_ext: str = ".png"
    ignore_label: int = 255
    # FC-CLIP's evaluation resize where its eval config sets one (fcclip_convnext_large_eval_cityscapes.yaml)
    test_size: tuple[int, int] | None = None
    prepare: str = ""  # the dataset argument of `python -m dreammask.trainer.data.prepare`

    @property
    def panoptic(self) -> bool:
        return self.panoptic_json is not None

    def required_file(self) -> str:
        """The file or folder whose presence says the dataset is prepared (relative to the root)."""
        return self.panoptic_json or self.sem_seg_root or self.image_root


_COCO = "coco"
_ADE = "ADEChallengeData2016"
_ADE_FULL = "ADE20K_2021_17_01"
_PC = "pascal_ctx_d2"

BUILTIN: dict[str, BuiltinDataset] = {d.name: d for d in (
    BuiltinDataset("coco_2017_train_panoptic", "coco_panoptic", f"{_COCO}/train2017",
                   f"{_COCO}/annotations/panoptic_train2017.json", f"{_COCO}/panoptic_train2017", prepare="coco"),
    BuiltinDataset("coco_2017_val_panoptic", "coco_panoptic", f"{_COCO}/val2017",
                   f"{_COCO}/annotations/panoptic_val2017.json", f"{_COCO}/panoptic_val2017", prepare="coco"),
    # ADE20K-150: panoptic (FC-CLIP's mIoU on it reads the semantic maps beside it, as FC-CLIP scores ADE20K)
    BuiltinDataset("ade20k_panoptic_val", "ade20k_150", f"{_ADE}/images/validation",
                   f"{_ADE}/ade20k_panoptic_val.json", f"{_ADE}/ade20k_panoptic_val",
                   sem_seg_root=f"{_ADE}/annotations_detectron2/validation", prepare="ade20k"),
    BuiltinDataset("ade20k_sem_seg_val", "ade20k_150", f"{_ADE}/images/validation",
                   sem_seg_root=f"{_ADE}/annotations_detectron2/validation", prepare="ade20k"),
    BuiltinDataset("ade20k_full_sem_seg_val", "ade20k_847", f"{_ADE_FULL}/images_detectron2/validation",
                   sem_seg_root=f"{_ADE_FULL}/annotations_detectron2/validation", sem_seg_ext=".tif",
                   ignore_label=65535, prepare="ade20k_full"),
    BuiltinDataset("pascal_context_59_sem_seg_val", "pascal_context_59", f"{_PC}/images/validation",
                   sem_seg_root=f"{_PC}/annotations_ctx59/validation", prepare="pascal_context"),
    BuiltinDataset("pascal_context_459_sem_seg_val", "pascal_context_459", f"{_PC}/images/validation",
                   sem_seg_root=f"{_PC}/annotations_ctx459/validation", sem_seg_ext=".tif", ignore_label=65535,
                   prepare="pascal_context"),
    BuiltinDataset("cityscapes_panoptic_val", "cityscapes", "cityscapes/leftImg8bit/val",
                   "cityscapes/gtFine/cityscapes_panoptic_val.json", "cityscapes/gtFine/cityscapes_panoptic_val",
                   sem_seg_root="cityscapes/gtFine/cityscapes_semantic_val", image_ext=".png",
                   test_size=(1024, 2560), prepare="cityscapes"),
)}

DATASET_VOCABULARIES = {name: d.vocabulary for name, d in BUILTIN.items()}


def datasets_root(root: str | os.PathLike | None = None) -> Path:
    """DATASETS.ROOT, else $DREAMMASK_DATASETS, else $DETECTRON2_DATASETS, else ./datasets."""
    return Path(root or os.environ.get("DREAMMASK_DATASETS") or os.environ.get("DETECTRON2_DATASETS") or "datasets")


def missing_file(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The path a prepared dataset would have and that is not there (None when it is)."""
    path = datasets_root(root) / BUILTIN[name].required_file()
    return None if path.exists() else path
