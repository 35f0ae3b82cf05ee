"""Registers datasets in COCO panoptic format, and the standard datasets (data/builtin.py), in the catalog.

A standard dataset lives under the datasets root (DATASETS.ROOT, $DREAMMASK_DATASETS or ./datasets) where
its preparation command writes it. Panoptic datasets read their COCO panoptic JSON (classes from its
categories); semantic-only ones (ADE20K-847, Pascal Context) read label maps named like their images, with
the classes of their vocabulary file. Any other dataset in COCO panoptic format registers with
`register_coco_panoptic_dataset`.
"""

from __future__ import annotations

from pathlib import Path

from .builtin import BUILTIN, DATASET_VOCABULARIES, BuiltinDataset, datasets_root
from .catalog import DatasetCatalog
from .coco_panoptic import DatasetMetadata, load_coco_panoptic_json
from .vocabulary import load_vocabulary_file

__all__ = ["attach_semantic_annotations", "datasets_root", "load_sem_seg", "register_builtin_datasets",
           "register_coco_panoptic_dataset", "register_sem_seg_dataset"]


def attach_semantic_annotations(dicts: list[dict], sem_seg_root, ext: str = ".png") -> int:
    """Set `sem_seg_file_name` on each dict whose `<image stem><ext>` exists under sem_seg_root; returns how
    many did."""
    root, n = Path(sem_seg_root), 0
    if not root.is_dir():
        return 0
    for d in dicts:
        cand = root / (Path(d["file_name"]).stem + ext)
        if cand.is_file():
            d["sem_seg_file_name"] = str(cand)
            n += 1
    return n


def register_coco_panoptic_dataset(name: str, json_file, image_root, panoptic_root, *, replace: bool = False,
                                   vocabulary: str | None = None, sem_seg_root=None,
                                   test_size: tuple[int, int] | None = None) -> None:
    """Register a COCO-panoptic-format dataset under `name` (loaded lazily, on first `get`). Its classes take
    FC-CLIP's names from `vocabulary` (a file of data/vocabularies/; default: by the dataset's name);
    semantic ground truth comes from `sem_seg_root` where it holds the image's annotation."""
    if replace:
        DatasetCatalog.remove(name)
    vocabulary = vocabulary or DATASET_VOCABULARIES.get(name)

    def load():
        dicts, meta = load_coco_panoptic_json(json_file, image_root, panoptic_root, name=name)
        if vocabulary:
            meta.with_vocabulary_file(vocabulary)
        if sem_seg_root is not None:
            attach_semantic_annotations(dicts, sem_seg_root)
        meta.test_size = test_size
        return dicts, meta

    DatasetCatalog.register(name, load)


def load_sem_seg(image_root, sem_seg_root, image_ext: str = ".jpg", sem_seg_ext: str = ".png") -> list[dict]:
    """Dataset dicts of a semantic-only dataset: every image with a label map of the same stem (detectron2's
    load_sem_seg pairing); an image without one, or a label map without an image, is an error."""
    image_root, sem_seg_root = Path(image_root), Path(sem_seg_root)
    if not sem_seg_root.is_dir():
        raise FileNotFoundError(f"semantic annotations {sem_seg_root} not found; check DATASETS.ROOT or prepare "
                                "the dataset (python -m dreammask.trainer.data.prepare)")
    labels = {p.stem: p for p in sorted(sem_seg_root.rglob(f"*{sem_seg_ext}"))}
    images = {p.stem: p for p in sorted(image_root.rglob(f"*{image_ext}"))}
    if set(labels) != set(images):
        odd = sorted(set(labels) ^ set(images))[:5]
        raise ValueError(f"{image_root} and {sem_seg_root} do not pair up (e.g. {odd}); re-run the preparation")
    if not images:
        raise ValueError(f"no {image_ext} images under {image_root}")
    return [{"file_name": str(images[s]), "image_id": s, "sem_seg_file_name": str(labels[s])} for s in sorted(images)]


def register_sem_seg_dataset(name: str, image_root, sem_seg_root, vocabulary: str, *, image_ext: str = ".jpg",
                             sem_seg_ext: str = ".png", ignore_label: int = 255,
                             test_size: tuple[int, int] | None = None, replace: bool = False) -> None:
    """Register a semantic-only dataset: label i of its maps is the i-th class of `vocabulary`."""
    if replace:
        DatasetCatalog.remove(name)

    def load():
        vf = load_vocabulary_file(vocabulary)
        meta = DatasetMetadata(name=name, classes=[s[0] for s in vf.synonyms], dataset_ids=list(vf.dataset_ids),
                               isthing=[bool(t) for t in vf.isthing], synonyms=[list(s) for s in vf.synonyms],
                               curated=True, ignore_label=ignore_label, test_size=test_size)
        return load_sem_seg(image_root, sem_seg_root, image_ext, sem_seg_ext), meta

    DatasetCatalog.register(name, load)


def _register(ds: BuiltinDataset, base: Path) -> None:
    if ds.panoptic:
        register_coco_panoptic_dataset(ds.name, base / ds.panoptic_json, base / ds.image_root, base / ds.panoptic_root,
                                       replace=True, vocabulary=ds.vocabulary,
                                       sem_seg_root=base / ds.sem_seg_root if ds.sem_seg_root else None,
                                       test_size=ds.test_size)
    else:
        register_sem_seg_dataset(ds.name, base / ds.image_root, base / ds.sem_seg_root, ds.vocabulary,
                                 image_ext=ds.image_ext, sem_seg_ext=ds.sem_seg_ext, ignore_label=ds.ignore_label,
                                 test_size=ds.test_size, replace=True)


def register_builtin_datasets(root: str | None = None) -> None:
    """Register the standard datasets under the datasets root (idempotent; a new root replaces the old)."""
    base = datasets_root(root)
    for ds in BUILTIN.values():
        _register(ds, base)
