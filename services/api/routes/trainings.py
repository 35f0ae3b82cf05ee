"""/v1/trainings: start a trainer run on curated datasets, follow its iteration, losses and latest
evaluation, read its metrics, cancel or resume it; evaluate a checkpoint (a training's, or FC-CLIP's
released one) as a job of the training service. The record lives under trainings/{id}/ in storage."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dreammask.shared import deletion, keys, quotas, submission
from dreammask.shared.celery_app import TASK_TRAIN
from dreammask.shared.schemas import DatasetManifest, Transition, utcnow
from dreammask.shared.storage import ObjectNotFound
from dreammask.shared.suggest import closest
from dreammask.trainer.service.record import create_training, is_stale, read_status, transition, write_status
from dreammask.trainer.service.schemas import (
    TRAINING_WEIGHTS_RE,
    EvaluationRequest,
    StoredTrainingSpec,
    TrainingSpec,
    TrainingState,
    TrainingView,
    cancel_key,
    metrics_key,
    spec_key,
    spec_notes,
    tenant_prefix,
)
from dreammask.trainer.service.settings import TrainerSettings

from .. import reviewing
from ..deps import RuntimeDep, SettingsDep, TenantDep, base_url
from ..errors import V1_ERRORS, responses
from ..quotas import TRAINING_QUOTA_EXAMPLE
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
    if spec.kind == "evaluate" or spec.weights:
        errors += _check_weights_to_evaluate(spec, rt, tenant, settings)
    if spec.kind == "train" and not spec.datasets and not spec.real_datasets:
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
    if spec.iterations is not None and spec.iterations > ts.trainer_max_iterations:
        errors.append(_err(("iterations",), f"at most {ts.trainer_max_iterations} iterations on this deployment"))
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
    root (one machine, shared volume), their prepared files must be there too."""
    try:
        from dreammask.trainer.data.builtin import BUILTIN, datasets_root, missing_file
        from dreammask.trainer.data.toy_world import TOY_WORLD_DATASETS
    except ImportError:
        return []
    root = datasets_root(str(ts.trainer_datasets_root) if ts.trainer_datasets_root else None)
    errors = []
    for field in ("real_datasets", "eval_datasets"):
        for i, name in enumerate(getattr(spec, field)):
            if (field == "eval_datasets" and name.startswith("synthetic:")) or name in TOY_WORLD_DATASETS:
                continue  # a curated dataset (checked by id above) or the toy world, drawn on demand
            if name not in BUILTIN:
                names = [*(["synthetic:<dataset id>"] if field == "eval_datasets" else []), *sorted(BUILTIN)]
                near = closest(name, [*names, *TOY_WORLD_DATASETS])
                hint = f" (did you mean {near!r}?)" if near else ""
                # Messages are cut at 300 characters: the action and the name first, then the standard names
                # (the toy world's, for demos and tests, only through the suggestion).
                errors.append(_err((field, i), f"use a registered dataset{hint}, not {name!r}: {', '.join(names)}"))
            elif root.is_dir() and missing_file(name, root) is not None:
                errors.append(_err((field, i), "prepare it on the trainer: `python -m dreammask.trainer.data.prepare "
                                               f"{BUILTIN[name].prepare} --root {root}`; {name!r} is registered but "
                                               f"{BUILTIN[name].required_file()} is missing under that root "
                                               "(DREAMMASK_TRAINER_DATASETS_ROOT)"))
    return errors


def _check_config(spec: TrainingSpec, ts: TrainerSettings, settings=None) -> list[dict]:
    """The config the trainer will build from this request (the same builder the worker runs): preset,
    override keys and values, then the CLIP weights it names. Skipped where the config code is not
    installed (the API image may lack it)."""
    try:
        from dreammask.trainer.config import ConfigError, build_training_cfg
    except ImportError:
        return [_err(("tiny",), "this deployment does not run the tiny model")] if (
            spec.tiny and not ts.trainer_allow_tiny) else []
    try:
        cfg = build_training_cfg(spec, ts)
    except ConfigError as e:
        return [_err(loc, msg) for loc, msg in e.errors]
    return _check_weights(cfg, settings)


def _check_weights(cfg, settings, field: str = "config") -> list[dict]:
    """The CLIP weights the config names, where the API sees the models directory the trainer uses (as
    dreammask.trainer.modeling.backbone.clip_convnext.resolve_weights_path finds them; that module needs torch)."""
    from pathlib import Path

    from dreammask.trainer.config import RANDOM_WEIGHTS_PREFIX

    weights = str(cfg.MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS or "")
    models_dir = Path(settings.models_dir) if settings is not None else None
    if not weights or weights.startswith(RANDOM_WEIGHTS_PREFIX) or models_dir is None or not models_dir.is_dir():
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


def _check_weights_to_evaluate(spec: TrainingSpec, rt, tenant: str, settings) -> list[dict]:
    """The checkpoint an evaluation names: one of the caller's trainings that has it, or a file in the models
    directory where the API sees it."""
    from pathlib import Path

    m = TRAINING_WEIGHTS_RE.match(spec.weights or "")
    if m:
        tid, name = m.groups()
        try:
            _owned(rt, tid, tenant)
        except HTTPException:
            return [_err(("weights",), f"no training {tid!r} of yours; `GET /v1/trainings` lists them")]
        prefix = keys.training_prefix(tid)
        if name is None and not rt.store.exists(prefix + "last_checkpoint"):
            return [_err(("weights",), f"training {tid} has no checkpoint yet")]
        if name is not None and not rt.store.exists(prefix + "checkpoints/" + name):
            kept = sorted(k.rsplit("/", 1)[-1] for k in rt.store.list(prefix + "checkpoints/"))
            return [_err(("weights",), f"training {tid} has no checkpoint {name}; it keeps: {', '.join(kept) or 'none'}")]
        return []
    models_dir = Path(settings.models_dir) if settings is not None else None
    if models_dir is not None and models_dir.is_dir() and not (models_dir / str(spec.weights)).is_file():
        found = sorted(str(p.relative_to(models_dir)) for p in models_dir.rglob("*")
                       if p.suffix in (".pkl", ".pth", ".pt"))[:10]
        return [_err(("weights",), f"no file {spec.weights!r} in the models directory; checkpoints there: "
                                   f"{', '.join(found) or 'none'}")]
    return []


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
        training_id=stored.training_id, url=url, name=stored.spec.name, kind=stored.spec.kind, state=st.state,
        created_at=st.created_at, updated_at=st.updated_at, iteration=st.iteration, max_iter=st.max_iter,
        losses=st.losses, latest_eval=st.latest_eval, checkpoint=st.checkpoint, metrics_url=f"{url}/metrics",
        transitions=st.transitions, error=st.error,
        notes=list(dict.fromkeys([*spec_notes(stored.spec), *st.notes])), result=st.result,
    )


def _enqueue(rt, training_id: str) -> JSONResponse | None:
    try:
        rt.dispatcher.send(TASK_TRAIN, training_id)
    except Exception as e:  # noqa: BLE001 - broker down: keep the record, say how to continue
        log.error("could not enqueue training %s: %s", training_id, e)
        st = read_status(rt.store, training_id)
        st.error = f"broker unavailable at submission: {e}"
        transition(rt.store, st, TrainingState.failed, st.error)
        submission.training_stopped(rt, st.tenant, training_id)
        return JSONResponse(status_code=503, content={
            "detail": f"the training was saved as {training_id} but could not be queued (broker unavailable); "
                      f"POST /v1/trainings/{training_id}/resume when the broker is back",
            "training_id": training_id,
        })
    return None


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingView, responses=responses(
    413, 422, 429, e429=TRAINING_QUOTA_EXAMPLE, e422={"detail": [{"loc": ["body", "config"], "type": "value_error", "msg": "no config 'big.yaml'; "
                                "shipped configs: dreammask_convnext_large.yaml, fcclip_convnext_large.yaml"}]}))
def submit_training(spec: Annotated[TrainingSpec, Body(openapi_examples=TRAINING_SPEC_EXAMPLES)], request: Request, response: Response, rt: RuntimeDep,
                    settings: SettingsDep, tenant: TenantDep):
    if spec.kind != "train":
        raise RequestValidationError([_err(("kind",), "evaluations go to POST /v1/trainings/evaluations")])
    return _submit(spec, request, response, rt, settings, tenant)


def _submit(spec: TrainingSpec, request: Request, response: Response, rt, settings, tenant: str):
    _check(spec, rt, tenant, TrainerSettings(), settings)
    # 429 (quotas.QuotaExceeded) over the tenant's unfinished trainings or once its storage is full
    st = submission.start_training(rt, tenant, lambda tid: create_training(rt.store, tenant, spec, training_id=tid))
    quotas.schedule_measure(rt.redis, tenant, "training", st.training_id, delay_s=60)
    failed = _enqueue(rt, st.training_id)
    if failed is not None:
        return failed
    view = _view(rt, request, settings, rt.store.get_model(spec_key(st.training_id), StoredTrainingSpec))
    response.headers["Location"] = view.url
    return view


@router.post("/evaluations", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingView, responses=responses(
    413, 422, 429, e429=TRAINING_QUOTA_EXAMPLE, e422={"detail": [{"loc": ["body", "weights"], "type": "value_error",
                                "msg": "training tr-abc has no checkpoint yet"}]}))
def submit_evaluation(req: EvaluationRequest, request: Request, response: Response, rt: RuntimeDep,
                      settings: SettingsDep, tenant: TenantDep):
    """Score a checkpoint on evaluation datasets in fp32, as a job of the training service: per dataset mIoU,
    PQ/SQ/RQ (things, stuff, seen and unseen classes) and a per-class table (GET .../{id}/evaluation).
    `weights` is "tr-<id>" (that training's last checkpoint), "tr-<id>/model_NNNNNNN.pth", or a file under
    the trainer's models directory (FC-CLIP's released checkpoint)."""
    trained = None
    m = TRAINING_WEIGHTS_RE.match(req.weights)
    if m:
        try:
            trained = _owned(rt, m.group(1), tenant).spec
        except HTTPException:
            raise RequestValidationError([_err(("weights",), f"no training {m.group(1)!r} of yours")]) from None
    try:
        spec = req.to_spec(trained)
    except ValueError as e:
        raise RequestValidationError([_err(("weights",), str(e))]) from None
    return _submit(spec, request, response, rt, settings, tenant)


@router.get("/{training_id}/evaluation", responses=responses(404, 422, **_NO_TRAINING))
def get_evaluation(training_id: str, rt: RuntimeDep, tenant: TenantDep) -> dict:
    """An evaluation's (or a training's evaluation-only run's) full result: per dataset its figures and
    per-class table (IoU, PQ/SQ/RQ, seen/unseen, novel). 404 until it has finished."""
    import json

    _owned(rt, training_id, tenant)
    try:
        return json.loads(rt.store.get_bytes(keys.training_prefix(training_id) + "evaluation.json"))
    except ObjectNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"training {training_id} has no evaluation (yet)") from None


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
    """Sets the cancel flag; a running loop stops at its next status check and keeps a checkpoint. A queued
    or lost (no heartbeat) one is cancelled at once, which frees its slot of the training quota."""
    stored = _owned(rt, training_id, tenant)
    st = read_status(rt.store, training_id)
    if st.state.terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, f"training {training_id} already {st.state.value}")
    rt.store.put_bytes(cancel_key(training_id), utcnow().isoformat().encode(), "text/plain")
    if st.state == TrainingState.queued or is_stale(st, TrainerSettings()):
        transition(rt.store, st, TrainingState.cancelled,
                   "cancelled while queued" if st.state == TrainingState.queued else "cancelled while lost")
        submission.training_stopped(rt, tenant, training_id)
    return _view(rt, request, settings, stored)


@router.post("/{training_id}/resume", status_code=status.HTTP_202_ACCEPTED, response_model=TrainingView,
             responses=responses(404, 409, 422, 429, e429=TRAINING_QUOTA_EXAMPLE, **_NO_TRAINING))
def resume_training(training_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep,
                    tenant: TenantDep):
    """Queue a failed, cancelled or lost (no heartbeat) training again; it resumes from last_checkpoint. It
    takes a slot of the training quota again (429 when none is free)."""
    stored = _owned(rt, training_id, tenant)
    st = read_status(rt.store, training_id)
    lost = st.state == TrainingState.running and is_stale(st, TrainerSettings())
    if st.state not in (TrainingState.failed, TrainingState.cancelled) and not lost:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"training {training_id} is {st.state.value}; only failed, cancelled or lost ones resume")

    def requeue(_tid: str) -> None:
        rt.store.delete(cancel_key(training_id))
        st.transitions.append(Transition(state=TrainingState.queued, at=utcnow(), reason="resumed"))
        st.state, st.error, st.worker = TrainingState.queued, None, None
        write_status(rt.store, st)

    submission.start_training(rt, tenant, requeue, training_id=training_id, new_data=False)
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
