"""/v1/trainings: start a trainer run on curated datasets, follow its iteration, losses and latest
evaluation, read its metrics, cancel or resume it. The record lives under trainings/{id}/ in storage."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dreammask.shared import keys
from dreammask.shared.celery_app import TASK_TRAIN
from dreammask.shared.schemas import DatasetManifest, Transition, utcnow
from dreammask.shared.storage import ObjectNotFound
from dreammask.trainer.service.record import create_training, is_stale, read_status, transition, write_status
from dreammask.trainer.service.schemas import (
    StoredTrainingSpec,
    TrainingSpec,
    TrainingState,
    TrainingView,
    cancel_key,
    metrics_key,
    spec_key,
    tenant_prefix,
)
from dreammask.trainer.service.settings import TrainerSettings

from ..deps import RuntimeDep, SettingsDep, TenantDep, base_url

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/trainings", tags=["trainings"])


def _err(loc: tuple, msg: str) -> dict:
    return {"loc": ("body", *loc), "msg": msg, "type": "value_error"}


def _check(spec: TrainingSpec, rt, tenant: str, ts: TrainerSettings) -> None:
    """Everything the API can check before queueing: a 422 naming each field to change."""
    errors = []
    if not spec.datasets and not spec.real_datasets:
        errors.append(_err(("datasets",), "give at least one dataset (curated dataset ids) or real_datasets"))
    for i, ds in enumerate(spec.datasets):
        try:
            m = rt.store.get_model(keys.dataset_manifest(ds), DatasetManifest)
        except ObjectNotFound:
            m = None
        if m is None or m.tenant != tenant:
            errors.append(_err(("datasets", i), f"no dataset {ds!r}; use the dataset_id of a finished job"))
    if spec.iterations > ts.trainer_max_iterations:
        errors.append(_err(("iterations",), f"at most {ts.trainer_max_iterations} iterations on this deployment"))
    if spec.tiny and not ts.trainer_allow_tiny:
        errors.append(_err(("tiny",), "this deployment does not run the tiny model"))
    if len(spec.overrides) > ts.trainer_max_overrides:
        errors.append(_err(("overrides",), f"at most {ts.trainer_max_overrides} overrides"))
    errors += _check_config(spec)
    if errors:
        raise RequestValidationError(errors)


def _check_config(spec: TrainingSpec) -> list[dict]:
    """Preset and override keys, where the config code is installed (the API image may lack it)."""
    try:
        from dreammask.trainer.config import get_cfg
        from dreammask.trainer.engine.config import add_engine_config, merge_overrides, resolve_config_file
    except ImportError:
        return []
    errors = []
    cfg = add_engine_config(get_cfg())
    if spec.config and not spec.tiny:
        try:
            cfg.merge_from_file(resolve_config_file(spec.config))
        except (ValueError, FileNotFoundError, KeyError) as e:
            errors.append(_err(("config",), str(e)))
    for key, value in spec.overrides.items():
        try:
            merge_overrides(cfg, {key: value})
        except ValueError as e:
            errors.append(_err(("overrides", key), str(e)))
    return errors


def _owned(rt, training_id: str, tenant: str) -> StoredTrainingSpec:
    try:
        stored = rt.store.get_model(spec_key(keys.check_id(training_id, "training id")), StoredTrainingSpec)
    except (ObjectNotFound, ValueError):
        stored = None
    if stored is None or stored.tenant != tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no training {training_id!r}")
    return stored


def _view(rt, request: Request, settings, stored: StoredTrainingSpec) -> TrainingView:
    st = read_status(rt.store, stored.training_id)
    url = f"{base_url(request, settings)}/v1/trainings/{stored.training_id}"
    return TrainingView(
        training_id=stored.training_id, url=url, name=stored.spec.name, state=st.state,
        created_at=st.created_at, updated_at=st.updated_at, iteration=st.iteration, max_iter=st.max_iter,
        losses=st.losses, latest_eval=st.latest_eval, checkpoint=st.checkpoint, metrics_url=f"{url}/metrics",
        transitions=st.transitions, error=st.error, notes=st.notes,
    )


def _enqueue(rt, training_id: str) -> JSONResponse | None:
    try:
        rt.dispatcher.send(TASK_TRAIN, training_id)
    except Exception as e:  # noqa: BLE001 - broker down: keep the record, say how to continue
        log.error("could not enqueue training %s: %s", training_id, e)
        st = read_status(rt.store, training_id)
        st.error = f"broker unavailable at submission: {e}"
        transition(rt.store, st, TrainingState.failed, st.error)
        return JSONResponse(status_code=503, content={
            "detail": f"the training was saved as {training_id} but could not be queued (broker unavailable); "
                      f"POST /v1/trainings/{training_id}/resume when the broker is back",
            "training_id": training_id,
        })
    return None


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingView)
def submit_training(spec: TrainingSpec, request: Request, response: Response, rt: RuntimeDep,
                    settings: SettingsDep, tenant: TenantDep):
    _check(spec, rt, tenant, TrainerSettings())
    st = create_training(rt.store, tenant, spec)
    failed = _enqueue(rt, st.training_id)
    if failed is not None:
        return failed
    view = _view(rt, request, settings, rt.store.get_model(spec_key(st.training_id), StoredTrainingSpec))
    response.headers["Location"] = view.url
    return view


@router.get("")
def list_trainings(request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    prefix = tenant_prefix(tenant)
    ids = sorted((k[len(prefix):] for k in rt.store.list(prefix)), reverse=True)
    items = [_view(rt, request, settings, _owned(rt, i, tenant)) for i in ids[offset:offset + limit]]
    return {"items": items, "total": len(ids), "limit": limit, "offset": offset}


@router.get("/{training_id}", response_model=TrainingView)
def get_training(training_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep):
    return _view(rt, request, settings, _owned(rt, training_id, tenant))


@router.get("/{training_id}/metrics")
def get_metrics(training_id: str, rt: RuntimeDep, tenant: TenantDep,
                tail: Annotated[int, Query(ge=1, le=10000)] = 200) -> dict[str, Any]:
    """The last `tail` lines of metrics.jsonl (losses per logged iteration, evaluations)."""
    import json

    _owned(rt, training_id, tenant)
    try:
        lines = rt.store.get_bytes(metrics_key(training_id)).decode().splitlines()
    except ObjectNotFound:
        lines = []
    return {"items": [json.loads(x) for x in lines[-tail:] if x.strip()], "total": len(lines)}


@router.post("/{training_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingView)
def cancel_training(training_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep):
    """Sets the cancel flag; a running loop stops at its next status check and keeps a checkpoint."""
    stored = _owned(rt, training_id, tenant)
    st = read_status(rt.store, training_id)
    if st.state.terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, f"training {training_id} already {st.state.value}")
    rt.store.put_bytes(cancel_key(training_id), utcnow().isoformat().encode(), "text/plain")
    if st.state == TrainingState.queued:
        transition(rt.store, st, TrainingState.cancelled, "cancelled while queued")
    return _view(rt, request, settings, stored)


@router.post("/{training_id}/resume", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingView)
def resume_training(training_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep,
                    tenant: TenantDep):
    """Queue a failed, cancelled or lost (no heartbeat) training again; it resumes from last_checkpoint."""
    stored = _owned(rt, training_id, tenant)
    st = read_status(rt.store, training_id)
    lost = st.state == TrainingState.running and is_stale(st, TrainerSettings())
    if st.state not in (TrainingState.failed, TrainingState.cancelled) and not lost:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"training {training_id} is {st.state.value}; only failed, cancelled or lost ones resume")
    rt.store.delete(cancel_key(training_id))
    st.transitions.append(Transition(state=TrainingState.queued, at=utcnow(), reason="resumed"))
    st.state, st.error, st.worker = TrainingState.queued, None, None
    write_status(rt.store, st)
    failed = _enqueue(rt, training_id)
    if failed is not None:
        return failed
    return _view(rt, request, settings, stored)
