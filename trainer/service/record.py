"""The training record under trainings/{id}/, without torch: what the API and `train_net` read and write.

spec.json (what was asked), status.json (state, iteration, latest losses and evaluation, heartbeat) and the
tenant marker are written here; the runner (service/runner.py, with torch) only adds progress to them.
The API imports this module, never the runner, so the API image needs no torch.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from dreammask.shared.schemas import Transition, utcnow
from dreammask.shared.storage import ObjectStore

from .schemas import (
    StoredTrainingSpec,
    TrainingSpec,
    TrainingState,
    TrainingStatus,
    spec_key,
    status_key,
    tenant_marker,
)
from .settings import TrainerSettings


def read_spec(store: ObjectStore, training_id: str) -> StoredTrainingSpec:
    return store.get_model(spec_key(training_id), StoredTrainingSpec)


def read_status(store: ObjectStore, training_id: str) -> TrainingStatus:
    return store.get_model(status_key(training_id), TrainingStatus)


def write_status(store: ObjectStore, status: TrainingStatus) -> None:
    status.updated_at = utcnow()
    store.put_json(status_key(status.training_id), status)


def transition(store: ObjectStore, status: TrainingStatus, state: TrainingState, reason: str | None = None) -> None:
    if status.state != state:
        status.transitions.append(Transition(state=state, at=utcnow(), reason=reason))
    status.state = state
    write_status(store, status)


def is_stale(status: TrainingStatus, settings: TrainerSettings) -> bool:
    return utcnow() - status.updated_at > timedelta(seconds=settings.trainer_stale_after_s)


def create_training(store: ObjectStore, tenant: str, spec: TrainingSpec, training_id: str | None = None) -> TrainingStatus:
    """Write a new training's spec and queued status (the API calls this, then enqueues the task)."""
    training_id = training_id or f"tr-{uuid.uuid4().hex[:12]}"
    now = utcnow()
    store.put_json(spec_key(training_id), StoredTrainingSpec(training_id=training_id, tenant=tenant,
                                                             created_at=now, spec=spec))
    status = TrainingStatus(training_id=training_id, tenant=tenant, state=TrainingState.queued, created_at=now,
                            updated_at=now, max_iter=spec.iterations or 0,
                            transitions=[Transition(state=TrainingState.queued, at=now)])
    store.put_json(status_key(training_id), status)
    store.put_bytes(tenant_marker(tenant, training_id), b"")
    return status
