"""Settings of the trainer and its training service (environment variables DREAMMASK_TRAINER_*). No torch imported here:
the API and the deployment checks read this module."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from dreammask.shared.settings import Settings


class TrainerSettings(Settings):
    # Processes per training on this worker: 1 runs the loop in the worker, more launch torchrun on the
    # worker's GPUs. Several nodes: see docs/training.md (torchrun on each node, train_net.py).
    trainer_gpus: int = Field(1, ge=1, le=64)
    # Where registered real datasets live (COCO under coco/...); default $DREAMMASK_DATASETS or ./datasets.
    trainer_datasets_root: Path | None = None
    # Local copy of curated datasets read from object storage (kept between trainings).
    trainer_cache_dir: Path = Path("./data/cache/datasets")
    trainer_max_iterations: int = Field(1_000_000, ge=1)
    # The tiny random model (demos, tests). Production deployments turn it off.
    trainer_allow_tiny: bool = True
    trainer_default_config: str = "dreammask_convnext_large.yaml"
    # A training runs for days: the task has its own limit, and is acknowledged when it starts (a Redis
    # redelivery after the visibility timeout would start it twice). A crash leaves the status "running"
    # without heartbeats; after this long it counts as lost and POST /v1/trainings/{id}/resume restarts it.
    trainer_time_limit_s: int = Field(14 * 24 * 3600, ge=60)
    trainer_stale_after_s: int = Field(900, ge=30)
    trainer_max_overrides: int = Field(100, ge=0)
