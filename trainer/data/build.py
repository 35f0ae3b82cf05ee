"""Datasets and loaders from a config: real + synthetic training data mixed, evaluation data sharded."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from dreammask.shared.schemas import normalise_name

from . import register_coco_panoptic, register_synthetic, toy_world  # noqa: F401 - fill the catalog
from .catalog import DatasetCatalog
from .coco_panoptic import DatasetMetadata
from .mapper import PanopticDatasetMapper
from .mixing import MixedBatchSampler


@dataclass
class Vocabulary:
    """The class list the model is trained on: the union of the training datasets' classes by name."""

    names: list[str] = field(default_factory=list)
    isthing: list[bool] = field(default_factory=list)
    is_novel: list[bool] = field(default_factory=list)
    # Per class, the names the text classifier embeds: FC-CLIP's list where a dataset's vocabulary file
    # covers the class, else its name (plus the curated lists of other datasets that name it).
    synonyms: list[list[str]] = field(default_factory=list)
    curated: list[bool] = field(default_factory=list)
    # The first training dataset's classes (their names): FC-CLIP decides which evaluation classes count as
    # seen against these (its train metadata is DATASETS.TRAIN[0]), not against the whole union.
    seen_reference: list[list[str]] = field(default_factory=list)

    def index(self) -> dict[str, int]:
        return {normalise_name(n): i for i, n in enumerate(self.names)}

    def add(self, meta: DatasetMetadata) -> dict[int, int]:
        """Merge a dataset's classes in; returns its contiguous id -> vocabulary id."""
        if not self.names and not self.seen_reference:
            self.seen_reference = [list(s) for s in meta.synonyms]
        idx = self.index()
        mapping = {}
        for i, (name, thing, novel, syns) in enumerate(zip(meta.classes, meta.isthing, meta.is_novel, meta.synonyms)):
            key = normalise_name(name)
            if key not in idx:
                idx[key] = len(self.names)
                self.names.append(name)
                self.isthing.append(bool(thing))
                self.is_novel.append(bool(novel))
                self.synonyms.append(list(syns))
                self.curated.append(bool(meta.curated))
            else:
                j = idx[key]
                if meta.curated and not self.curated[j]:
                    # FC-CLIP's list replaces a plain name (a curated export of "orange" must not bring the
                    # ambiguous bare name back next to COCO's "orange fruit").
                    self.synonyms[j], self.curated[j] = list(syns), True
                elif meta.curated:
                    self.synonyms[j] += [s for s in syns if s not in self.synonyms[j]]
                # A class seen in real data is not novel, whatever a synthetic export says.
                self.is_novel[j] = self.is_novel[j] and bool(novel)
            mapping[i] = idx[key]
        return mapping

    def to_json(self) -> dict:
        return {"names": self.names, "isthing": self.isthing, "is_novel": self.is_novel, "synonyms": self.synonyms,
                "curated": self.curated, "seen_reference": self.seen_reference}


def remap_categories(dicts: list[dict], mapping: dict[int, int]) -> list[dict]:
    out = []
    for d in dicts:
        d = copy.copy(d)
        d["segments_info"] = [{**s, "category_id": mapping[s["category_id"]]} for s in d["segments_info"]]
        out.append(d)
    return out


class MappedDataset(Dataset):
    """Dataset dicts through a mapper; an item is an index or (index, augmentation seed)."""

    def __init__(self, dicts: list[dict], mapper: PanopticDatasetMapper):
        self.dicts, self.mapper = dicts, mapper

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, item):
        idx, seed = item if isinstance(item, tuple) else (item, None)
        return self.mapper(self.dicts[idx], seed)


def trivial_batch_collator(batch):
    return batch


@dataclass
class TrainData:
    loader: DataLoader
    vocabulary: Vocabulary
    sampler: MixedBatchSampler
    num_real: int
    num_synthetic: int


def synthetic_dataset_names(cfg) -> list[str]:
    return [register_synthetic.synthetic_name(i) for i in cfg.DATASETS.SYNTHETIC.IDS]


def load_training_dicts(cfg) -> tuple[list[dict], list[dict], Vocabulary]:
    """(real dicts, synthetic dicts, vocabulary): real datasets first, so their classes come first."""
    if cfg.DATASETS.ROOT or list(cfg.DATASETS.TRAIN):
        register_coco_panoptic.register_builtin_datasets(cfg.DATASETS.ROOT or None)
    vocab = Vocabulary()
    real, synthetic = [], []
    for name in cfg.DATASETS.TRAIN:
        dicts, meta = DatasetCatalog.get(name)
        real += remap_categories(dicts, vocab.add(meta))
    for name in synthetic_dataset_names(cfg):
        dicts, meta = DatasetCatalog.get(name)
        dicts = remap_categories(dicts, vocab.add(meta))
        synthetic += [{**d, "is_synthetic": True} if "is_synthetic" not in d else d for d in dicts]
    # A "real" dataset can still hold synthetic images (the export flags them): sort by the flag.
    moved = [d for d in real if d.get("is_synthetic")]
    real = [d for d in real if not d.get("is_synthetic")]
    kept = [d for d in synthetic if d.get("is_synthetic")]
    real += [d for d in synthetic if not d.get("is_synthetic")]
    return real, moved + kept, vocab


def build_train_data(cfg, rank: int = 0, world_size: int = 1, start_iter: int = 0) -> TrainData:
    real, synthetic, vocab = load_training_dicts(cfg)
    total = int(cfg.SOLVER.IMS_PER_BATCH)
    if total % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={total} is not divisible by the {world_size} processes")
    sampler = MixedBatchSampler(
        len(real), len(synthetic), total // world_size, float(cfg.DATASETS.SYNTHETIC.RATIO),
        int(cfg.DATALOADER.MIN_REAL_PER_BATCH), seed=int(cfg.DATALOADER.SEED), rank=rank,
        world_size=world_size, start_iter=start_iter,
    )
    dataset = MappedDataset(real + synthetic, PanopticDatasetMapper.from_config(cfg, is_train=True))
    workers = int(cfg.DATALOADER.NUM_WORKERS)
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, collate_fn=trivial_batch_collator,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
    )
    return TrainData(loader, vocab, sampler, len(real), len(synthetic))


def build_test_loader(cfg, dataset_name: str, rank: int = 0, world_size: int = 1,
                      max_images: int = 0) -> tuple[DataLoader, DatasetMetadata, tuple[str, ...]]:
    """Evaluation images of one dataset, this process's shard, one image per batch, resized to the
    dataset's own test size where it has one; with the evaluation tasks its annotations allow
    ("sem_seg", and "panoptic" where every image has a panoptic PNG)."""
    dicts, meta = DatasetCatalog.get(dataset_name)
    if max_images:
        dicts = dicts[:max_images]
    tasks = ("sem_seg", "panoptic") if all(d.get("pan_seg_file_name") for d in dicts) else ("sem_seg",)
    mapper = PanopticDatasetMapper.from_config(cfg, is_train=False, test_size=meta.test_size)
    dataset = MappedDataset(dicts[rank::world_size], mapper)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=min(int(cfg.DATALOADER.NUM_WORKERS), 2),
                        collate_fn=trivial_batch_collator)
    return loader, meta, tasks
