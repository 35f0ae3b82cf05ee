"""/v1/trainings: start a trainer run on curated datasets, follow its iteration, losses and latest
evaluation, read its metrics, cancel or resume it. The record lives under trainings/{id}/ in storage."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dreammask.shared import deletion, keys, quotas
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

from .. import reviewing
from ..deps import RuntimeDep, SettingsDep, TenantDep, base_url
from ..errors import V1_ERRORS, responses
from ..views import TRAINING_SPEC_EXAMPLES, MetricsLines, Page
from .deletion import DeletionResult

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/trainings", tags=["trainings"], responses=responses(*V1_ERRORS))
_NO_TRAINING = {"e404": {"detail": "no training 'train-20260101-000000-abcdef'"}}


class TrainingList(Page):
    items: list[TrainingView]


def _err(loc: tuple, msg: str) -> dict:
    return {"loc": ("body", *loc), "msg": msg, "type": "value_error"}


def _check(spec: TrainingSpec, rt, tenant: str, ts: TrainerSettings, settings=None) -> None:
    """Everything the API can check before queueing: a 422 naming each field to change and what exists."""
    errors = []
    if not spec.datasets and not spec.real_datasets:
        errors.append(_err(("datasets",), "give at least one dataset (curated dataset ids) or real_datasets"))
    missing = []
    for i, ds in enumerate(spec.datasets):
        try:
            m = rt.store.get_model(keys.dataset_manifest(ds), DatasetManifest)
        except ObjectNotFound:
            m = None
        if m is None or m.tenant != tenant:
            missing.append(i)
    if missing:
        yours = _tenant_datasets(rt, tenant)
        have = f"your datasets: {', '.join(yours)}" if yours else "you have no dataset yet: run a job first"
        for i in missing:
            errors.append(_err(("datasets", i), f"no dataset {spec.datasets[i]!r}; {have}"))
    errors += _check_real_datasets(spec, ts)
    if spec.iterations > ts.trainer_max_iterations:
        errors.append(_err(("iterations",), f"at most {ts.trainer_max_iterations} iterations on this deployment"))
    if spec.tiny and not ts.trainer_allow_tiny:
        errors.append(_err(("tiny",), "this deployment does not run the tiny model"))
    if len(spec.overrides) > ts.trainer_max_overrides:
        errors.append(_err(("overrides",), f"at most {ts.trainer_max_overrides} overrides"))
    errors += _check_config(spec, ts, settings)
    if errors:
        raise RequestValidationError(errors)


def _tenant_datasets(rt, tenant: str, limit: int = 10) -> list[str]:
    """The tenant's newest finished datasets, to say what exists when a dataset id is wrong."""
    out = []
    for job_id in sorted(rt.tracker.list_jobs(tenant), reverse=True):
        try:
            ds = rt.tracker.status(job_id).dataset_id
        except Exception:  # noqa: BLE001 - a half-written record: not worth failing the 422 for
            ds = None
        if ds:
            out.append(ds)
        if len(out) >= limit:
            break
    return out


def _check_real_datasets(spec: TrainingSpec, ts: TrainerSettings) -> list[dict]:
    """Real and eval datasets must be names the trainer registers; where the API sees the trainer's datasets
    root (one machine, shared volume), their annotation file must be there too."""
    try:
        from dreammask.trainer.data.register_coco_panoptic import COCO_SPLITS, datasets_root
    except ImportError:
        return []
    root = datasets_root(str(ts.trainer_datasets_root) if ts.trainer_datasets_root else None)
    errors = []
    for field in ("real_datasets", "eval_datasets"):
        for i, name in enumerate(getattr(spec, field)):
            if field == "eval_datasets" and name.startswith("synthetic:"):
                continue
            if name not in COCO_SPLITS:
                known = ", ".join(sorted(COCO_SPLITS)) + (", synthetic:<dataset id>" if field == "eval_datasets" else "")
                errors.append(_err((field, i), f"unknown dataset {name!r}; registered: {known}"))
            elif root.is_dir() and not (root / COCO_SPLITS[name][2]).is_file():
                errors.append(_err((field, i), f"{name!r} is registered but {root / COCO_SPLITS[name][2]} is missing "
                                               "on this deployment; put the dataset under DREAMMASK_TRAINER_DATASETS_ROOT"))
    return errors


def _check_config(spec: TrainingSpec, ts: TrainerSettings | None = None, settings=None) -> list[dict]:
    """Preset, weights and override keys, where the config code is installed (the API image may lack it)."""
    try:
        from dreammask.trainer.config import get_cfg
        from dreammask.trainer.config.engine import add_engine_config, merge_overrides, resolve_config_file
    except ImportError:
        return []
    errors = []
    cfg = add_engine_config(get_cfg())
    if spec.config:
        try:
            path = resolve_config_file(spec.config)
        except (ValueError, FileNotFoundError) as e:
            errors.append(_err(("config",), str(e)))
        else:
            if spec.tiny:
                errors.append(_err(("config",), "tiny: true runs the tiny model's own config; remove config, "
                                                "or set tiny: false to train this one"))
            else:
                try:
                    cfg.merge_from_file(path)
                except (ValueError, KeyError) as e:
                    errors.append(_err(("config",), str(e)))
                else:
                    errors += _check_weights(cfg, settings)
    elif not spec.tiny and ts is not None:
        try:
            cfg.merge_from_file(resolve_config_file(ts.trainer_default_config))
        except (ValueError, FileNotFoundError, KeyError):
            pass  # the deployment's default: the worker reports a broken one
        else:
            errors += _check_weights(cfg, settings)
    for key, value in spec.overrides.items():
        try:
            merge_overrides(cfg, {key: value})
        except ValueError as e:
            errors.append(_err(("overrides", key), str(e)))
    return errors


def _check_weights(cfg, settings, field: str = "config") -> list[dict]:
    """The CLIP weights the config names, where the API sees the models directory the trainer uses (as
    dreammask.trainer.modeling.backbone.clip_convnext.resolve_weights_path finds them; that module needs torch)."""
    from pathlib import Path

    weights = str(cfg.MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS or "")
    models_dir = Path(settings.models_dir) if settings is not None else None
    if not weights or models_dir is None or not models_dir.is_dir():
        return []
    path = Path(weights).expanduser()
    path = path if path.is_absolute() else models_dir / path
    if path.is_file():
        return []
    found = sorted(str(p.relative_to(models_dir)) for p in models_dir.rglob("*")
                   if p.suffix in (".bin", ".pt", ".pth", ".safetensors"))[:10]
    return [_err((field,), f"the config's CLIP weights {weights!r} are not in {models_dir} "
                           f"(MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS); weights there: {', '.join(found) or 'none'}; "
                           "put the open_clip checkpoint there, or use tiny: true")]


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


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingView, responses=responses(
    413, 422, 429, e422={"detail": [{"loc": ["body", "config"], "type": "value_error", "msg": "no config 'big.yaml'; "
                                "shipped configs: dreammask_convnext_large.yaml, fcclip_convnext_large.yaml"}]}))
def submit_training(spec: Annotated[TrainingSpec, Body(openapi_examples=TRAINING_SPEC_EXAMPLES)], request: Request, response: Response, rt: RuntimeDep,
                    settings: SettingsDep, tenant: TenantDep):
    _check(spec, rt, tenant, TrainerSettings(), settings)
    quotas.check_stored_bytes(rt.redis, tenant, quotas.Limits.from_settings(settings))  # 429 once full
    st = create_training(rt.store, tenant, spec)
    quotas.schedule_measure(rt.redis, tenant, "training", st.training_id, delay_s=60)
    failed = _enqueue(rt, st.training_id)
    if failed is not None:
        return failed
    view = _view(rt, request, settings, rt.store.get_model(spec_key(st.training_id), StoredTrainingSpec))
    response.headers["Location"] = view.url
    return view


@router.get("", response_model=TrainingList, responses=responses(422))
def list_trainings(request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                   offset: Annotated[int, Query(ge=0)] = 0):
    prefix = tenant_prefix(tenant)
    ids = sorted((k[len(prefix):] for k in rt.store.list(prefix)), reverse=True)
    items = [_view(rt, request, settings, _owned(rt, i, tenant)) for i in ids[offset:offset + limit]]
    return {"items": items, "total": len(ids), "limit": limit, "offset": offset}


@router.get("/{training_id}", response_model=TrainingView, responses=responses(404, 422, **_NO_TRAINING))
def get_training(training_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep):
    return _view(rt, request, settings, _owned(rt, training_id, tenant))


@router.get("/{training_id}/metrics", response_model=MetricsLines, responses=responses(404, 422, **_NO_TRAINING))
def get_metrics(training_id: str, rt: RuntimeDep, tenant: TenantDep,
                tail: Annotated[int, Query(ge=1, le=10000)] = 200):
    """The last `tail` lines of metrics.jsonl (losses per logged iteration, evaluations)."""
    import json

    _owned(rt, training_id, tenant)
    try:
        lines = rt.store.get_bytes(metrics_key(training_id)).decode().splitlines()
    except ObjectNotFound:
        lines = []
    return {"items": [json.loads(x) for x in lines[-tail:] if x.strip()], "total": len(lines)}


@router.post("/{training_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingView,
             responses=responses(404, 409, 422, **_NO_TRAINING))
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


@router.post("/{training_id}/resume", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingView,
             responses=responses(404, 409, 422, **_NO_TRAINING))
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


@router.delete("/{training_id}", response_model=DeletionResult, responses={
    202: {"model": DeletionResult, "description": "the training is running: it is cancelled now and deleted once "
                                                  "it stopped"},
    **responses(404, 422, **_NO_TRAINING)})
def delete_training(training_id: str, request: Request, rt: RuntimeDep, tenant: TenantDep):
    """Delete a training: its checkpoints, metrics and record. A running one is cancelled first (202) and
    removed by the supervisor once it stopped (or its heartbeat went stale)."""
    _owned(rt, training_id, tenant)
    out = deletion.delete_training(rt, training_id, tenant=tenant,
                                   stale_after_s=TrainerSettings().trainer_stale_after_s,
                                   who=reviewing.who(tenant, request.headers.get("authorization", "").partition(" ")[2]))
    if out.pending:
        return JSONResponse(status_code=status.HTTP_202_ACCEPTED, content=out.as_dict())
    return out.as_dict()
