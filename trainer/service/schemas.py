"""Training records: what a client posts, what is stored under trainings/{id}/, what the API shows.
No torch here (the API imports it)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dreammask.shared import keys
from dreammask.shared.schemas import JobState, Model, Transition, Versioned

# A config key: "SOLVER.BASE_LR", or a top-level one such as "SEED" (the builder checks it exists).
_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*$")
# A checkpoint of a training of this platform: "tr-<id>" (its last checkpoint) or "tr-<id>/model_0000100.pth".
TRAINING_WEIGHTS_RE = re.compile(r"^(tr-[A-Za-z0-9_-]+)(?:/(model_\d{7}\.pth))?$")
TrainingState = JobState  # queued, running, succeeded, failed, cancelled


class TrainingSpec(Versioned):
    """POST /v1/trainings (kind "train"); POST /v1/trainings/evaluations stores one of kind "evaluate"."""

    name: str | None = Field(None, max_length=200)
    kind: Literal["train", "evaluate"] = "train"
    # Curated datasets of this platform (dataset ids from finished jobs): the synthetic samples.
    datasets: list[str] = Field(default_factory=list, max_length=100)
    # Real datasets registered on the trainer (e.g. "coco_2017_train_panoptic"); they fill the SRA bank.
    real_datasets: list[str] = Field(default_factory=list, max_length=20)
    # Evaluated every TEST.EVAL_PERIOD and at the end: catalog names or "synthetic:<dataset id>".
    eval_datasets: list[str] = Field(default_factory=list, max_length=20)
    config: str | None = Field(None, max_length=200, description="preset under trainer/configs/")
    overrides: dict[str, Any] = Field(default_factory=dict, description='e.g. {"SOLVER.BASE_LR": 5e-5}')
    iterations: int | None = Field(None, ge=1, description="trainer iterations (a training needs them)")
    # The checkpoint an evaluation scores, or a training starts from (its model weights; the optimizer starts
    # afresh): "tr-<id>" (that training's last checkpoint), "tr-<id>/model_NNNNNNN.pth", or a file under the
    # trainer's models directory (FC-CLIP's released checkpoint, e.g. "fcclip/fcclip_cocopan.pth").
    weights: str | None = Field(None, max_length=300)
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

    @model_validator(mode="after")
    def _kind_needs(self) -> TrainingSpec:
        if self.kind == "train" and self.iterations is None:
            raise ValueError("a training needs iterations (e.g. 90000)")
        if self.kind == "evaluate":
            if not self.weights:
                raise ValueError("an evaluation needs weights: 'tr-<id>', 'tr-<id>/model_NNNNNNN.pth' or a file under the models directory")
            if not self.eval_datasets:
                raise ValueError("an evaluation needs eval_datasets, e.g. ['ade20k_panoptic_val']")
        return self

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str | None) -> str | None:
        if v is None or TRAINING_WEIGHTS_RE.match(v):
            return v
        parts = v.replace("\\", "/").split("/")
        if v.startswith("/") or ".." in parts or not v.strip():
            raise ValueError("weights: a training ('tr-<id>[/model_NNNNNNN.pth]') or a path relative to the models directory")
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


class EvaluationRequest(Versioned):
    """POST /v1/trainings/evaluations: score a checkpoint on evaluation datasets (fp32), as a job of the
    training service."""

    name: str | None = Field(None, max_length=200)
    weights: str = Field(..., max_length=300, description="'tr-<id>' (its last checkpoint), "
                         "'tr-<id>/model_NNNNNNN.pth', or a file under the trainer's models directory")
    eval_datasets: list[str] = Field(..., min_length=1, max_length=20,
                                     description="catalog names (e.g. 'ade20k_panoptic_val') or 'synthetic:<dataset id>'")
    config: str | None = Field(None, max_length=200, description="preset; default: the training's own, else the "
                               "deployment's default")
    overrides: dict[str, Any] = Field(default_factory=dict)
    tiny: bool = False
    gpus: int | None = Field(None, ge=1, le=64)

    def to_spec(self, trained: TrainingSpec | None = None) -> TrainingSpec:
        """The stored spec. Evaluating a training's checkpoint reuses its preset and model overrides (not its
        dataset keys), then this request's overrides."""
        overrides: dict[str, Any] = {}
        config, tiny = self.config, self.tiny
        if trained is not None and self.config is None and not self.tiny:
            config, tiny = trained.config, trained.tiny
            overrides = {k: v for k, v in trained.overrides.items() if not k.startswith("DATASETS.")}
        return TrainingSpec(name=self.name, kind="evaluate", weights=self.weights, eval_datasets=self.eval_datasets,
                            config=config, tiny=tiny, overrides={**overrides, **self.overrides}, gpus=self.gpus)


class TrainingView(Model):
    training_id: str
    url: str
    name: str | None = None
    kind: Literal["train", "evaluate"] = "train"
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
    # Once finished: the run's summary (iteration, losses, checkpoint, seconds, ...), with `weights_report`
    # naming every tensor of MODEL.WEIGHTS that did not load (missing, unused, shape_mismatch), or the
    # evaluation's figures per dataset.
    result: dict[str, Any] | None = None


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
