"""Command-line training (detectron2's train_net.py shape); every process of torchrun runs this.

  # a stored training of the platform (what the training worker launches for several GPUs)
  torchrun --nproc-per-node 8 -m dreammask.trainer.train_net --training-id tr-123
  # a config file, outputs in object storage (DREAMMASK_STORAGE_*) or a local folder
  torchrun --nproc-per-node 8 -m dreammask.trainer.train_net --config-file dreammask_convnext_large \\
      --output-dir ./output/dreammask DATASETS.SYNTHETIC.IDS "['ds-abc']" SOLVER.MAX_ITER 368750
  # several nodes: the same command on each, with --nnodes N --node-rank i --rdzv-endpoint host:port
  # evaluation only: a checkpoint (FC-CLIP's released one or one of this trainer's) on DATASETS.TEST
  python -m dreammask.trainer.train_net --eval-only --config-file fcclip_convnext_large --output-dir ./eval \
      MODEL.WEIGHTS fcclip_cocopan.pth DATASETS.TEST "('ade20k_panoptic_val',)"
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--training-id", help="run the stored training trainings/<id>/ of the platform")
    p.add_argument("--config-file", help="YAML file or preset name under trainer/configs/")
    p.add_argument("--tiny", action="store_true", help="the tiny random model (smoke tests)")
    p.add_argument("--output-dir", help="write checkpoints and metrics to this folder (default: object storage)")
    p.add_argument("--prefix", default="runs/train_net/", help="key prefix in object storage")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing last_checkpoint")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate MODEL.WEIGHTS on DATASETS.TEST (fp32); writes evaluation.json and evaluation.md")
    p.add_argument("--num-gpus", type=int, default=1, help="spawn this many local processes (without torchrun)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    args = p.parse_args(argv)
    if args.eval_only and args.training_id:
        # --training-id runs (or resumes) the stored training as recorded; silently dropping --eval-only would
        # train when the user asked to score, so refuse the pair and name the ways to score a training.
        p.error(f"--eval-only cannot be combined with --training-id (which runs or resumes training "
                f"{args.training_id}); to score its checkpoint run `dreammask trainings evaluate {args.training_id} "
                "--dataset NAME`, or `--eval-only --config-file PRESET MODEL.WEIGHTS <checkpoint file> "
                "DATASETS.TEST \"('NAME',)\"`")
    return args


def _object_store():
    from dreammask.shared.settings import Settings
    from dreammask.shared.storage import store_from_settings

    return store_from_settings(Settings())


def _store(output_dir: str | None):
    from dreammask.shared.storage import LocalObjectStore

    return LocalObjectStore(output_dir) if output_dir else _object_store()


def main(argv=None) -> int:
    logging.basicConfig(level=os.environ.get("DREAMMASK_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from dreammask.trainer import distributed as dist
    from dreammask.trainer.engine.launch import train, train_local_processes

    if args.eval_only:
        return _eval_only(args)
    if args.training_id:
        from dreammask.shared import keys
        from dreammask.trainer.config import build_training_cfg
        from dreammask.trainer.service.record import read_spec
        from dreammask.trainer.service.runner import StatusReporter
        from dreammask.trainer.service.settings import TrainerSettings

        store = _store(args.output_dir)
        stored = read_spec(store, args.training_id)
        cfg = build_training_cfg(stored.spec, TrainerSettings())
        prefix = keys.training_prefix(args.training_id)
        dist.init_from_env(str(cfg.ENGINE.DIST_BACKEND), str(cfg.MODEL.DEVICE))
        if stored.spec.kind == "evaluate":
            from dreammask.trainer.service.runner import run_evaluation

            result = run_evaluation(store, args.training_id, cfg, TrainerSettings(),
                                    data_store=_object_store() if args.output_dir else None)
            _write_rank_result(result)
            dist.destroy()
            return 0
        from dreammask.trainer.service.runner import with_local_weights

        cfg = with_local_weights(store, cfg, TrainerSettings())  # a training that starts from a checkpoint
        reporter = StatusReporter(store, args.training_id) if dist.is_main_process() else None
        result = train(cfg, store, prefix, progress_callback=reporter, resume=not args.no_resume,
                       data_store=_object_store() if args.output_dir else None)
    else:
        from dreammask.trainer.config import get_training_cfg

        cfg = get_training_cfg(args.config_file, overrides=list(args.opts), tiny=args.tiny)
        store = _store(args.output_dir)
        prefix = "" if args.output_dir else args.prefix
        if args.num_gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            train_local_processes(cfg, store, prefix, args.num_gpus,
                                  data_store=_object_store() if args.output_dir else None)
            return 0
        result = train(cfg, store, prefix, resume=not args.no_resume,
                       data_store=_object_store() if args.output_dir else None)
    _write_rank_result(result)
    if dist.is_main_process():
        print(json.dumps({k: v for k, v in result.items() if k != "eval"}, default=str))
    dist.destroy()
    return 0


def _write_rank_result(result: dict) -> None:
    """torchrun under the training worker: rank 0's result goes where the worker reads it."""
    from dreammask.trainer import distributed as dist

    out_dir = os.environ.get("DREAMMASK_TRAINER_RESULT_DIR")
    if out_dir and dist.is_main_process():
        Path(out_dir, "rank0.json").write_text(json.dumps(result, default=str))


def _eval_only(args) -> int:
    from dreammask.trainer import distributed as dist
    from dreammask.trainer.config import get_training_cfg
    from dreammask.trainer.engine.evaluate import evaluation_only

    cfg = get_training_cfg(args.config_file, overrides=list(args.opts), tiny=args.tiny)
    store = _store(args.output_dir)
    prefix = "" if args.output_dir else args.prefix
    if args.num_gpus > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        raise SystemExit("--eval-only with several processes: start it with torchrun --nproc-per-node N")
    from dreammask.trainer.data import register_synthetic

    register_synthetic.use_store(_object_store() if args.output_dir else store, cfg.DATASETS.SYNTHETIC.CACHE_DIR or None)
    result = evaluation_only(cfg, store, prefix)
    if dist.is_main_process():
        print(json.dumps({"weights": result["weights"], "weights_report": result["weights_report"]["summary"],
                          **{name: d["metrics"] for name, d in result["datasets"].items()}}, default=str))
    dist.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
