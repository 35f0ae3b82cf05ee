"""Preparation of the standard datasets from their official releases into the layout the trainer reads
(data/builtin.py), one command per dataset:

    python -m dreammask.trainer.data.prepare ade20k          # ADE20K-150: semantic and panoptic
    python -m dreammask.trainer.data.prepare ade20k_full     # ADE20K-847
    python -m dreammask.trainer.data.prepare pascal_context  # Pascal Context 459 and 59
    python -m dreammask.trainer.data.prepare cityscapes      # Cityscapes panoptic and semantic (val)
    python -m dreammask.trainer.data.prepare coco            # COCO panoptic

Each module says which release files it reads and writes what FC-CLIP's (detectron2's) preparation scripts
write, so the evaluation reads the same ground truth. docs/training.md says where to put the downloads.
"""
