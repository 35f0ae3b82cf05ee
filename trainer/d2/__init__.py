"""detectron2 integration. `config` and `datasets` need no detectron2; `meta_arch`, `register` and
`train_net` import it and are only imported where it is installed:

    from dreammask.trainer.d2 import meta_arch, register   # registers DreamMaskFCCLIP + datasets
    python -m dreammask.trainer.d2.train_net --config-file ... --num-gpus 8
"""
