"""Entry points that run a training: in this process, in a torchrun process group, or for the demo.

`train(cfg, store, prefix)` is what every process runs (train_net.py under torchrun, the Celery worker for
one device). `train_on_dataset` is the demo's call: a few iterations of the tiny model on a curated dataset.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from dreammask.shared.storage import ObjectStore

from .. import distributed as dist
from ..config import get_training_cfg

log = logging.getLogger("dreammask.trainer")


def train(cfg, store: ObjectStore, prefix: str, *, progress_callback=None, resume: bool = True,
          model=None, cache_dir: str | Path | None = None, data_store: ObjectStore | None = None) -> dict:
    """Run (or resume) the training described by cfg; checkpoints and metrics go under `prefix` of
    `store`; curated datasets are read from `data_store` (default: the same store)."""
    from ..data import register_synthetic
    from .train_loop import Trainer

    dist.init_from_env(str(cfg.ENGINE.DIST_BACKEND), str(cfg.MODEL.DEVICE))
    cache = cache_dir or cfg.DATASETS.SYNTHETIC.CACHE_DIR or None
    if cache is None:
        # Every process of one machine shares one copy of the exports.
        cache = dist.broadcast_object(tempfile.mkdtemp(prefix="dreammask-datasets-") if dist.is_main_process() else None)
    register_synthetic.use_store(data_store or store, cache)
    cfg.freeze()
    if dist.is_main_process():  # the one place a run's resolved config is written
        store.put_bytes(_prefixed(prefix) + "config.yaml", cfg.dump().encode(), "text/yaml")
    trainer = Trainer(cfg, store, prefix, model=model, progress_callback=progress_callback, resume=resume)
    return trainer.train()


def train_on_dataset(store: ObjectStore, dataset_id: str, iterations: int, output_prefix: str,
                     cfg_overrides=None, tiny: bool = True, real_toy: bool = False) -> dict:
    """A few iterations on one curated dataset (the demo), then its training-set metrics.

    The curated dataset is all synthetic. Without real data nothing fills the SRA memory bank, so the run
    trains the segmentation losses only (DATALOADER.MIN_REAL_PER_BATCH 0) and says so in its result. With
    `real_toy`, a small real-domain toy set over the dataset's non-novel classes trains beside it (half of
    each batch): the bank fills with real features and the SRA loss aligns the synthetic objects to them.
    """
    from ..data import register_synthetic

    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    run = {
        "DATASETS.SYNTHETIC.IDS": [dataset_id], "DATASETS.SYNTHETIC.RATIO": 1.0,
        "DATALOADER.MIN_REAL_PER_BATCH": 0, "DATASETS.TRAIN": [],
        "DATASETS.TEST": [register_synthetic.synthetic_name(dataset_id)],
        "SOLVER.MAX_ITER": int(iterations), "TEST.EVAL_PERIOD": int(iterations),
        "SOLVER.CHECKPOINT_PERIOD": int(iterations), "ENGINE.LOG_PERIOD": max(1, int(iterations) // 10),
    }
    if real_toy:
        from ..data.toy import register_real_toy_beside

        real_root = tempfile.mkdtemp(prefix="dreammask-real-toy-")
        run.update({"DATASETS.TRAIN": [register_real_toy_beside(store, dataset_id, real_root)],
                    "DATASETS.SYNTHETIC.RATIO": 0.5, "DATALOADER.MIN_REAL_PER_BATCH": 1})
    if tiny:
        run.update({"MODEL.DEVICE": "cpu", "DATALOADER.NUM_WORKERS": 0})
    cfg = get_training_cfg(tiny=tiny, overrides=run)
    from ..config import merge_overrides

    merge_overrides(cfg, cfg_overrides)  # the caller's, last
    prefix = _prefixed(output_prefix)
    result = train(cfg, store, prefix)
    import json

    logged = [json.loads(x) for x in store.get_bytes(prefix + "metrics.jsonl").decode().splitlines() if x.strip()]
    sra = [float(x["loss_sra"]) for x in logged if "loss_sra" in x]
    result.update(
        dataset_id=dataset_id,
        sra_active=result["real_images"] > 0 and result["synthetic_images"] > 0,
        # over the logged steps: the memory bank fills from real objects, then synthetic ones are aligned
        sra_loss_mean=sum(sra) / len(sra) if sra else 0.0,
        sra_nonzero_steps=sum(1 for v in sra if v > 0),
        metrics_key=prefix + "metrics.jsonl",
        config_key=prefix + "config.yaml",
    )
    return result


def _prefixed(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _local_process(cfg_yaml: str, store: ObjectStore, prefix: str, result_dir: str | None,
                   data_store: ObjectStore | None = None) -> None:
    import json

    from ..config import CfgNode

    cfg = CfgNode.load_cfg(cfg_yaml)
    result = train(cfg, store, prefix, data_store=data_store)
    if result_dir:
        Path(result_dir, f"rank{dist.get_rank()}.json").write_text(json.dumps(result, default=str))


def train_local_processes(cfg, store: ObjectStore, prefix: str, num_processes: int,
                          result_dir: str | Path | None = None, data_store: ObjectStore | None = None) -> None:
    """One machine, several processes (GPUs, or CPU processes with gloo) without torchrun: spawns them
    joined in one process group, each running `train`. Their results land in result_dir/rank{i}.json."""
    dist.launch(_local_process, num_processes, args=(cfg.dump(), store, prefix, str(result_dir) if result_dir else None, data_store),
                backend=str(cfg.ENGINE.DIST_BACKEND))
