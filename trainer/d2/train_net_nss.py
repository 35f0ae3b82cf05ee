"""DreamMask's `train_net_nss.py` entry (real data + NSS synthetic data, IAT on), under the name the
paper's code uses: the same entry as `python -m dreammask.trainer.d2.train_net` (needs detectron2)."""

from __future__ import annotations

import torch
from detectron2.engine import default_argument_parser, launch

from .train_net import Trainer, main, setup  # noqa: F401

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    torch.multiprocessing.set_start_method("spawn", force=True)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
