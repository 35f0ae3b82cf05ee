"""Training records: what a client posts, what is stored under trainings/{id}/, what the API shows.
No torch here (the API imports it)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from dreammask.shared import keys
from dreammask.shared.schemas import JobState, Model, Transition, Versioned

_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$")
TrainingState = JobState  # queued, running, succeeded, failed, cancelled


class TrainingSpec(Versioned):
    """POST /v1/trainings."""

    name: str | None = Field(None, max_length=200)
    # Curated datasets of this platform (dataset ids from finished jobs): the synthetic samples.
    datasets: list[str] = Field(default_factory=list, max_length=100)
    # Real datasets registered on the trainer (e.g. "coco_2017_train_panoptic"); they fill the SRA bank.
    real_datasets: list[str] = Field(default_factory=list, max_length=20)
    # Evaluated every TEST.EVAL_PERIOD and at the end: catalog names or "synthetic:<dataset id>".
    eval_datasets: list[str] = Field(default_factory=list, max_length=20)
    config: str | None = Field(None, max_length=200, description="preset under trainer/configs/")
    overrides: dict[str, Any] = Field(default_factory=dict, description='e.g. {"SOLVER.BASE_LR": 5e-5}')
    iterations: int = Field(..., ge=1)
    synthetic_ratio: float | None = Field(None, ge=0.0, le=1.0)
    tiny: bool = Field(False, description="the tiny random model (demos, tests)")
    gpus: int | None = Field(None, ge=1, le=64, description="processes; default: the worker's setting")

    @field_validator("datasets")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        for i, d in enumerate(v):
            try:
                keys.check_id(d, "dataset id")
            except ValueError as e:
                raise ValueError(f"item {i}: {e}") from None
        if len(set(v)) != len(v):
            raise ValueError("list each dataset once")
        return v

    @field_validator("overrides")
    @classmethod
    def _override_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k, val in v.items():
            if not _KEY_RE.match(k):
                raise ValueError(f"override key {k!r} is not a config key like 'SOLVER.BASE_LR'")
            if isinstance(val, (dict,)):
                raise ValueError(f"override {k!r}: give one value per key, not a section")
        return v


class StoredTrainingSpec(Versioned):
    training_id: str
    tenant: str
    created_at: datetime
    spec: TrainingSpec


class TrainingStatus(Versioned):
    training_id: str
    tenant: str
    state: TrainingState
    created_at: datetime
    updated_at: datetime
    iteration: int = 0
    max_iter: int = 0
    losses: dict[str, float] = Field(default_factory=dict)
    latest_eval: dict[str, Any] | None = None
    checkpoint: str | None = None
    transitions: list[Transition] = Field(default_factory=list)
    error: str | None = None
    worker: str | None = None
    notes: list[str] = Field(default_factory=list)
    result: dict[str, Any] | None = None


NO_REAL_DATA_NOTE = ("SRA is off: no real dataset given (real_datasets), so the memory bank stays empty, "
                     "loss_sra stays 0 and only the segmentation losses train")


def spec_notes(spec: TrainingSpec) -> list[str]:
    """What a person should know about a training before it runs (shown from the moment it is submitted)."""
    return [NO_REAL_DATA_NOTE] if spec.datasets and not spec.real_datasets else []


class TrainingView(Model):
    training_id: str
    url: str
    name: str | None = None
    state: TrainingState
    created_at: datetime
    updated_at: datetime
    iteration: int
    max_iter: int
    losses: dict[str, float]
    latest_eval: dict[str, Any] | None
    checkpoint: str | None
    metrics_url: str
    transitions: list[Transition]
    error: str | None
    notes: list[str]


# ------------------------------------------------------------ keys under trainings/{id}/

def spec_key(training_id: str) -> str:
    return keys.training_prefix(training_id) + "spec.json"


def status_key(training_id: str) -> str:
    return keys.training_prefix(training_id) + "status.json"


def metrics_key(training_id: str) -> str:
    return keys.training_prefix(training_id) + "metrics.jsonl"


def cancel_key(training_id: str) -> str:
    return keys.training_prefix(training_id) + "cancel"


def tenant_marker(tenant: str, training_id: str) -> str:
    return f"tenants/{keys.check_id(tenant, 'tenant')}/trainings/{keys.check_id(training_id, 'training id')}"


def tenant_prefix(tenant: str) -> str:
    return f"tenants/{keys.check_id(tenant, 'tenant')}/trainings/"
