"""detectron2 training entry point for DreamMask (needs detectron2):

    python -m dreammask.trainer.d2.train_net --config-file trainer/configs/dreammask_convnext_large.yaml \\
        --num-gpus 8 DATASETS.SYNTHETIC.IDS "['ds-abc']"
    python -m dreammask.trainer.d2.train_net --eval-only --config-file fcclip_convnext_large \\
        MODEL.WEIGHTS fcclip_cocopan.pth DATASETS.TEST "('ade20k_panoptic_val',)"

The platform's own loop (dreammask.trainer.train_net) needs no detectron2 and is what the service runs;
this one is for teams whose tooling is built on detectron2's DefaultTrainer. Everything here that needs
no detectron2 lives in parts.py and config.py and is tested without it.
"""

from __future__ import annotations

import logging

import torch
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.utils import comm

from dreammask.trainer.engine.optim import build_lr_scheduler as build_schedule

from ..config.d2 import prepare_d2_config
from . import meta_arch  # noqa: F401  (registers DreamMaskFCCLIP)
from .parts import (
    check_d2_args,
    d2_optimizer,
    d2_test,
    d2_train_data,
    load_fcclip_weights_into,
    vocabulary_kwargs,
)
from .register import register_builtin_in_d2

log = logging.getLogger("dreammask.trainer.d2")


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with the platform's data (remapped ids, real/synthetic mixing), AdamW
    with full-model clipping, the FC-CLIP schedule, and FC-CLIP weights mapped by name."""

    train_data = None  # the TrainData of the last loader built (its vocabulary sets the model's)

    @classmethod
    def build_train_loader(cls, cfg):
        cls.train_data = d2_train_data(cfg, comm.get_rank(), comm.get_world_size())
        return cls.train_data.loader

    @classmethod
    def build_optimizer(cls, cfg, model):
        return d2_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_schedule(cfg, optimizer)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """The platform's evaluation (fp32, FC-CLIP's seen rule, per-class table) on DATASETS.TEST; during
        training the training vocabulary is restored after."""
        vocabulary = cls.train_data.vocabulary if cls.train_data is not None else None
        return d2_test(cfg, model, vocabulary)

    def resume_or_load(self, resume=True):
        if resume and self.checkpointer.has_checkpoint():
            return super().resume_or_load(resume=True)
        if self.cfg.MODEL.WEIGHTS:  # a released FC-CLIP checkpoint: its names mapped onto this model
            report = load_fcclip_weights_into(self.model, self.cfg.MODEL.WEIGHTS)
            log.info("FC-CLIP weights: %s", report["summary"])
            self.start_iter = 0
            return None
        return super().resume_or_load(resume=False)


def setup(args):
    from detectron2.config import get_cfg

    cfg = prepare_d2_config(get_cfg(), args.config_file, args.opts)  # pins META_ARCHITECTURE last
    register_builtin_in_d2(cfg.DATASETS.ROOT or None)
    if cfg.DATASETS.SYNTHETIC.IDS:
        from dreammask.shared.storage import store_from_settings
        from dreammask.trainer.data import register_synthetic

        register_synthetic.use_store(store_from_settings(), cfg.DATASETS.SYNTHETIC.CACHE_DIR or None)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    check_d2_args(args)
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        report = load_fcclip_weights_into(model, cfg.MODEL.WEIGHTS)
        log.info("weights: %s", report["summary"])
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    model.set_vocabulary(**vocabulary_kwargs(Trainer.train_data.vocabulary))
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    torch.multiprocessing.set_start_method("spawn", force=True)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
