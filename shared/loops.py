"""The closed loop's record and its allocation rule (docs/loop.md). No torch, no trainer: the API writes a
loop here, the loop service (`services/loop/`) advances it, the supervisor ticks it, the bench reuses the rule.

A loop runs N rounds of: evaluate the current checkpoint per class, allocate the next synthesis job's image
budget across the target categories by their deficit, synthesise, train from the previous checkpoint on the
real data plus every synthetic dataset so far, evaluate again. Everything it decides is in object storage:

    loops/{loop}/spec.json          what was asked (StoredLoopSpec)
    loops/{loop}/status.json        state, step, what it waits for, every transition (LoopStatus)
    loops/{loop}/rounds/{nnn}.json  per round: allocation, job and dataset, training and checkpoint, per-class IoU
    loops/{loop}/cancel             present once a cancel was asked
    tenants/{tenant}/loops/{loop}   the tenant's index
"""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timezone
from typing import Any, Literal

import redis
from pydantic import Field, field_validator, model_validator

from . import keys
from .schemas import (
    Backends,
    ExportFormat,
    JobState,
    Model,
    SynthesisParams,
    Thresholds,
    Transition,
    Versioned,
    check_category_list,
    normalise_name,
    utcnow,
)
from .storage import ObjectNotFound, ObjectStore

LoopState = JobState  # queued, running, succeeded, failed, cancelled
Step = Literal["start", "evaluating", "training", "synthesis", "done"]
ACTIVE_KEY = "dreammask:loops:active"
SCANNED_KEY = "dreammask:loops:scanned"  # present while Redis still holds the active-loop set
DEFAULT_FLOOR = 0.05


# ------------------------------------------------------------------------------------------------ the spec

class LoopJob(Model):
    """How each round's synthesis job is made: a job spec's fields except the categories, which the loop
    decides (the training categories, and the allocation as its `category_budget`)."""

    image_size: int = Field(512, ge=64, le=4096)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="round r's job seed is seed + r")
    max_objects_per_scene: int = Field(6, ge=1, le=30)
    backends: Backends = Field(default_factory=Backends)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    synthesis: SynthesisParams = Field(default_factory=SynthesisParams)
    exports: list[ExportFormat] | None = None


class LoopTraining(Model):
    """How each round trains: a training request's fields except its data and starting weights, which the
    loop decides."""

    iterations: int = Field(..., ge=1, description="trainer iterations of each round")
    base_iterations: int | None = Field(None, ge=1, description="round 0's training on the real data alone, when "
                                        "the loop starts without weights (default: iterations)")
    config: str | None = Field(None, max_length=200)
    overrides: dict[str, Any] = Field(default_factory=dict)
    synthetic_ratio: float | None = Field(None, ge=0.0, le=1.0)
    tiny: bool = False
    gpus: int | None = Field(None, ge=1, le=64)


class LoopSpec(Versioned):
    """What a client posts to `POST /v1/loops`."""

    name: str | None = Field(None, max_length=200)
    preset: Literal["coco_panoptic"] | None = None
    train_categories: list[str] | None = Field(None, description="the real data's classes: the jobs' training "
                                               "categories")
    target: list[str] = Field(..., min_length=1, max_length=500, description="the categories the loop makes "
                              "images of and steers by: novel with respect to the training categories")
    rounds: int = Field(..., ge=1, le=50)
    images_per_round: int = Field(..., ge=1, le=1_000_000, description="each round's image budget B")
    floor: float = Field(DEFAULT_FLOOR, gt=0.0, le=1.0, description="the least weight a category's deficit "
                         "counts for, so that none starves")
    target_iou: float | None = Field(None, gt=0.0, le=100.0, description="deficit = target_iou − IoU (per cent); "
                                     "default 100, i.e. 1 − IoU")
    real_datasets: list[str] = Field(default_factory=list, max_length=20)
    eval_dataset: str = Field(..., max_length=200, description="the dataset the loop evaluates on and steers by")
    weights: str | None = Field(None, max_length=300, description="the starting checkpoint ('tr-<id>' or a file of "
                                "the models directory); none: round 0 trains on the real data alone")
    job: LoopJob = Field(default_factory=LoopJob)
    training: LoopTraining

    @field_validator("target")
    @classmethod
    def _target(cls, v: list[str]) -> list[str]:
        return check_category_list(v)

    @model_validator(mode="after")
    def _consistent(self) -> LoopSpec:
        if self.train_categories is None and self.preset is None:
            raise ValueError("give train_categories or a preset (the real data's classes)")
        if self.train_categories is not None and self.preset is not None:
            raise ValueError("give train_categories or a preset, not both")
        if self.images_per_round < len(self.target):
            raise ValueError(f"images_per_round {self.images_per_round} is below the {len(self.target)} target "
                             "categories: each gets at least one image per round")
        if self.weights is None and not self.real_datasets:
            raise ValueError("give weights (the checkpoint to start from) or real_datasets (round 0 trains on "
                             "them alone)")
        return self


class StoredLoopSpec(Versioned):
    loop_id: str
    tenant: str
    created_at: datetime
    spec: LoopSpec
    train_categories: list[str]


# ------------------------------------------------------------------------------------------------ the record

class LoopStatus(Versioned):
    loop_id: str
    tenant: str
    state: LoopState
    created_at: datetime
    updated_at: datetime
    round: int = 0  # the round in progress (0: the starting checkpoint's evaluation or training)
    step: Step = "start"
    job_id: str | None = None  # what the loop waits for
    training_id: str | None = None
    checkpoint: str | None = None  # the latest round's checkpoint, as a training's weights ("tr-<id>")
    transitions: list[Transition] = Field(default_factory=list)
    error: str | None = None


class LoopRound(Versioned):
    """One round (`loops/{loop}/rounds/{nnn}.json`). Round 0 has no allocation and no job: it evaluates the
    starting checkpoint (or trains one on the real data alone)."""

    loop_id: str
    round: int
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    # The allocation and what it read: the previous round's IoU of each target category (per cent).
    ious_before: dict[str, float | None] = Field(default_factory=dict)
    deficits: dict[str, float] = Field(default_factory=dict)
    weights: dict[str, float] = Field(default_factory=dict)
    allocation: dict[str, int] | None = None
    job_id: str | None = None
    job_sent: bool = False
    dataset_id: str | None = None
    datasets: list[str] = Field(default_factory=list)  # every synthetic dataset this round trains on
    training_id: str | None = None  # the round's training (or round 0's evaluation of the given weights)
    training_sent: bool = False
    trained_from: str | None = None  # the checkpoint this round's training started from
    checkpoint: str | None = None  # this round's checkpoint, as weights ("tr-<id>") ...
    checkpoint_key: str | None = None  # ... and its object key
    per_class: dict[str, float | None] = Field(default_factory=dict)  # IoU of every class of the eval dataset
    classes: list[dict[str, Any]] = Field(default_factory=list)  # the evaluator's per-class rows
    metrics: dict[str, Any] = Field(default_factory=dict)  # mIoU, PQ ... of the eval dataset
    target_mean_iou: float | None = None
    target_min_iou: float | None = None


class LoopView(Model):
    loop_id: str
    url: str
    name: str | None = None
    state: LoopState
    created_at: datetime
    updated_at: datetime
    round: int
    rounds: int
    step: Step
    job_id: str | None = None
    training_id: str | None = None
    checkpoint: str | None = None
    cancel_requested: bool = False
    transitions: list[Transition] = Field(default_factory=list)
    error: str | None = None
    history: list[LoopRound] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------------ keys

def new_loop_id() -> str:
    return f"lp{datetime.now(timezone.utc).strftime('%Y%m%d%H%M%S')}{secrets.token_hex(4)}"


def loop_prefix(loop_id: str) -> str:
    return f"loops/{keys.check_id(loop_id, 'loop id')}/"


def spec_key(loop_id: str) -> str:
    return loop_prefix(loop_id) + "spec.json"


def status_key(loop_id: str) -> str:
    return loop_prefix(loop_id) + "status.json"


def round_key(loop_id: str, n: int) -> str:
    return loop_prefix(loop_id) + f"rounds/{n:03d}.json"


def cancel_key(loop_id: str) -> str:
    return loop_prefix(loop_id) + "cancel"


def tenant_marker(tenant: str, loop_id: str) -> str:
    return f"tenants/{keys.check_id(tenant, 'tenant')}/loops/{keys.check_id(loop_id, 'loop id')}"


def tenant_prefix(tenant: str) -> str:
    return f"tenants/{keys.check_id(tenant, 'tenant')}/loops/"


# ------------------------------------------------------------------------------------------------ records

def create_loop(store: ObjectStore, r: redis.Redis | None, tenant: str, spec: LoopSpec,
                train_categories: list[str]) -> LoopStatus:
    loop_id, now = new_loop_id(), utcnow()
    store.put_json(spec_key(loop_id), StoredLoopSpec(loop_id=loop_id, tenant=tenant, created_at=now, spec=spec,
                                                     train_categories=train_categories))
    status = LoopStatus(loop_id=loop_id, tenant=tenant, state=LoopState.queued, created_at=now, updated_at=now,
                        transitions=[Transition(state=LoopState.queued, at=now)])
    store.put_json(status_key(loop_id), status)
    store.put_bytes(tenant_marker(tenant, loop_id), b"")
    if r is not None:
        try:
            r.sadd(ACTIVE_KEY, loop_id)
        except redis.RedisError:  # the supervisor's scan of storage finds it
            pass
    return status


def read_spec(store: ObjectStore, loop_id: str) -> StoredLoopSpec:
    return store.get_model(spec_key(loop_id), StoredLoopSpec)


def read_status(store: ObjectStore, loop_id: str) -> LoopStatus:
    return store.get_model(status_key(loop_id), LoopStatus)


def write_status(store: ObjectStore, status: LoopStatus) -> None:
    status.updated_at = utcnow()
    store.put_json(status_key(status.loop_id), status)


def transition(store: ObjectStore, status: LoopStatus, state: LoopState, reason: str | None = None) -> None:
    if status.state != state or reason:
        status.transitions.append(Transition(state=state, at=utcnow(), reason=reason))
    status.state = state
    write_status(store, status)


def read_round(store: ObjectStore, loop_id: str, n: int) -> LoopRound | None:
    return store.try_get_model(round_key(loop_id, n), LoopRound)


def write_round(store: ObjectStore, rnd: LoopRound) -> None:
    store.put_json(round_key(rnd.loop_id, rnd.round), rnd)


def read_rounds(store: ObjectStore, loop_id: str) -> list[LoopRound]:
    out = []
    for k in sorted(store.list(loop_prefix(loop_id) + "rounds/")):
        try:
            out.append(store.get_model(k, LoopRound))
        except ObjectNotFound:
            continue
    return out


def list_loops(store: ObjectStore, tenant: str) -> list[str]:
    prefix = tenant_prefix(tenant)
    return [k[len(prefix):] for k in store.list(prefix)]


def active_loops(store: ObjectStore, r: redis.Redis) -> list[str]:
    """Loops not yet finished: a Redis set, rebuilt from a scan of storage when Redis lost it (and every ten
    minutes, so a loop created while Redis was away is found)."""
    if not r.exists(SCANNED_KEY):
        for k in store.list("loops/"):
            if k.endswith("/status.json"):
                try:
                    st = store.get_model(k, LoopStatus)
                except (ObjectNotFound, ValueError):
                    continue
                if not st.state.terminal:
                    r.sadd(ACTIVE_KEY, st.loop_id)
        r.set(SCANNED_KEY, 1, ex=600)
    return sorted(x.decode() if isinstance(x, bytes) else x for x in r.smembers(ACTIVE_KEY))


def deactivate(r: redis.Redis, loop_id: str) -> None:
    r.srem(ACTIVE_KEY, loop_id)


# ------------------------------------------------------------------------------------------------ allocation

class Allocation(Model):
    counts: dict[str, int]  # images per category, in the target's order; they sum to the budget
    deficits: dict[str, float]  # max(0, target − IoU) / 100; an unmeasured category counts as IoU 0
    weights: dict[str, float]  # max(deficit, floor)


def deficit(iou: float | None, target_iou: float = 100.0) -> float:
    """How far a category's IoU (per cent) is below the target, as a fraction: max(0, target − IoU) / 100.
    A category the evaluation did not measure (absent from its images: None or NaN) counts as IoU 0."""
    if iou is None or not math.isfinite(iou):
        iou = 0.0
    return max(0.0, float(target_iou) - float(iou)) / 100.0


def allocate(budget: int, ious: dict[str, float | None], *, floor: float = DEFAULT_FLOOR,
             target_iou: float | None = None) -> Allocation:
    """The next round's images per category (docs/loop.md):

    1. each category's weight is max(deficit, floor), deficit = max(0, target − IoU) / 100;
    2. each category first gets one image (every round's dataset names every target category, so the
       model's vocabulary stays the same from round to round);
    3. the other B − K images are shared in proportion to the weights, and the quotas are rounded by the
       largest-remainder rule (each gets the whole part of its quota, the images left go to the largest
       fractional parts; ties to the larger deficit, then to the earlier category), so the counts sum to B.

    With equal IoUs (or all below the floor) this is the uniform allocation."""
    names = list(ious)
    if not names:
        raise ValueError("allocate needs at least one category")
    if budget < len(names):
        raise ValueError(f"a budget of {budget} images cannot give each of {len(names)} categories one image")
    if not 0 < floor <= 1:
        raise ValueError(f"floor must lie in (0, 1], not {floor}")
    t = 100.0 if target_iou is None else float(target_iou)
    deficits = {n: deficit(ious[n], t) for n in names}
    weights = {n: max(deficits[n], floor) for n in names}
    return Allocation(counts=_largest_remainder(budget, weights, deficits), deficits=deficits, weights=weights)


def uniform(budget: int, names: list[str]) -> dict[str, int]:
    """The same budget split evenly (largest remainder: the first categories get the images left over)."""
    w = {n: 1.0 for n in names}
    return _largest_remainder(budget, w, {n: 0.0 for n in names})


def _largest_remainder(budget: int, weights: dict[str, float], deficits: dict[str, float]) -> dict[str, int]:
    names = list(weights)
    rest = budget - len(names)
    total = sum(weights.values())
    quotas = {n: rest * weights[n] / total for n in names}
    counts = {n: 1 + math.floor(quotas[n] + 1e-9) for n in names}
    left = budget - sum(counts.values())
    order = sorted(range(len(names)), key=lambda i: (-(quotas[names[i]] - math.floor(quotas[names[i]] + 1e-9)),
                                                     -deficits[names[i]], i))
    for i in order[:left]:
        counts[names[i]] += 1
    return counts


# ------------------------------------------------------------------------------------------------ round requests

def label(stored: StoredLoopSpec) -> str:
    return stored.spec.name or stored.loop_id


def training_request(stored: StoredLoopSpec, round_no: int, datasets: list[str], weights: str | None) -> dict:
    """The fields of round `round_no`'s training request (trainer/service/schemas.py TrainingSpec): the real
    data and every synthetic dataset so far, from the previous round's checkpoint, evaluated at its end on
    the loop's evaluation dataset. Round 0 (no weights given) trains on the real data alone."""
    spec, t = stored.spec, stored.spec.training
    iterations = (t.base_iterations or t.iterations) if round_no == 0 else t.iterations
    return {"name": f"{label(stored)} round {round_no}"[:200], "kind": "train", "datasets": list(datasets),
            "real_datasets": list(spec.real_datasets), "eval_datasets": [spec.eval_dataset], "config": t.config,
            "overrides": dict(t.overrides), "iterations": iterations, "weights": weights,
            "synthetic_ratio": t.synthetic_ratio, "tiny": t.tiny, "gpus": t.gpus}


def evaluation_request(stored: StoredLoopSpec) -> dict:
    """The fields of round 0's evaluation request (EvaluationRequest) when the loop starts from given weights."""
    spec, t = stored.spec, stored.spec.training
    return {"name": f"{label(stored)} round 0"[:200], "weights": spec.weights, "eval_datasets": [spec.eval_dataset],
            "config": t.config, "overrides": dict(t.overrides), "tiny": t.tiny, "gpus": t.gpus}


def job_spec(stored: StoredLoopSpec, round_no: int, allocation: dict[str, int]):
    """Round `round_no`'s synthesis job: the loop's job template, its training categories, the allocation as
    the job's category_budget, seed + round as its seed."""
    from .schemas import JobSpec

    spec, j = stored.spec, stored.spec.job
    cats = {"preset": spec.preset} if spec.preset else {"train_categories": list(stored.train_categories)}
    return JobSpec(name=f"{label(stored)} round {round_no}"[:200], **cats, category_budget=dict(allocation),
                   image_size=j.image_size, seed=min(j.seed + round_no, 2**31 - 1),
                   max_objects_per_scene=j.max_objects_per_scene, backends=j.backends, thresholds=j.thresholds,
                   synthesis=j.synthesis, exports=j.exports)


def class_iou(per_class: dict[str, float | None], name: str) -> float | None:
    """A category's IoU in an evaluation's per-class figures, matched by normalised name."""
    want = normalise_name(name)
    for k, v in per_class.items():
        if normalise_name(k) == want:
            return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)
    return None
