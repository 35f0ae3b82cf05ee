"""detectron2 training entry point for DreamMask (needs detectron2):

    python -m dreammask.trainer.d2.train_net --config-file trainer/configs/dreammask_convnext_large.yaml \\
        --num-gpus 8 DATASETS.SYNTHETIC.IDS "['ds-abc']"

The platform's own loop (dreammask.trainer.train_net) needs no detectron2 and is what the service runs;
this one is for teams whose tooling is built on detectron2's DefaultTrainer.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.structures import Instances

from dreammask.shared.storage import store_from_settings
from dreammask.trainer.data.mapper import PanopticDatasetMapper
from dreammask.trainer.engine.optim import build_lr_scheduler as build_poly
from dreammask.trainer.engine.optim import build_optimizer as build_adamw

from . import meta_arch  # noqa: F401  (registers DreamMaskFCCLIP)
from .config import add_dreammask_config
from .register import register_synthetic_dataset


class D2Mapper:
    """The platform's mapper (LSJ on the id map), its instances as a detectron2 `Instances`."""

    def __init__(self, cfg):
        self.inner = PanopticDatasetMapper.from_config(cfg, is_train=True)

    def __call__(self, d):
        out = self.inner(d, seed=int(np.random.randint(2**31)))
        h, w = out["image"].shape[-2:]
        inst = Instances((h, w))
        inst.gt_classes = out["instances"]["gt_classes"]
        inst.gt_masks = out["instances"]["gt_masks"]
        out["instances"] = inst
        return out


class Trainer(DefaultTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=D2Mapper(cfg))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_adamw(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_poly(cfg, optimizer)


def setup(args):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_dreammask_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    store = store_from_settings()
    names = [register_synthetic_dataset(store, i, cfg.DATASETS.SYNTHETIC.CACHE_DIR or "./data/cache/datasets")
             for i in cfg.DATASETS.SYNTHETIC.IDS]
    cfg.DATASETS.TRAIN = tuple(cfg.DATASETS.TRAIN) + tuple(names)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    trainer = Trainer(cfg)
    # The vocabulary: every class of the training datasets, in their contiguous order.
    classes = []
    for name in cfg.DATASETS.TRAIN:
        for c in MetadataCatalog.get(name).stuff_classes:
            if c not in classes:
                classes.append(c)
    thing = {c for n in cfg.DATASETS.TRAIN for c in MetadataCatalog.get(n).thing_classes}
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    model.set_vocabulary(classes, [True] * len(classes), thing_flags=[c in thing for c in classes])
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    torch.multiprocessing.set_start_method("spawn", force=True)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
