"""/v1/loops: the closed loop (docs/loop.md). Submit a loop, follow its rounds (allocation, job and dataset,
training and checkpoint, per-class IoU), cancel it. The loop service advances it (services/loop/); its record
lives under loops/{id}/ in storage."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from dreammask.shared import keys
from dreammask.shared import loops as lp
from dreammask.shared.celery_app import TASK_LOOP_ADVANCE
from dreammask.shared.schemas import DatasetManifest, JobSpec, normalise_name, utcnow
from dreammask.shared.submission import job_problems
from dreammask.shared.suggest import closest
from dreammask.shared.vocabulary import PRESETS

from ..deps import RuntimeDep, SettingsDep, TenantDep, base_url
from ..errors import V1_ERRORS, responses
from ..views import LOOP_SPEC_EXAMPLES, Page

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/loops", tags=["loops"], responses=responses(*V1_ERRORS))
_NO_LOOP = {"e404": {"detail": "no loop 'lp20260101000000abcdef01'"}}
# The zero-shot evaluation sets: their label lists serve evaluation only, so a loop, which steers synthesis by
# what it evaluates, must not evaluate on them (that would fit the synthetic data to the test).
ZERO_SHOT_PREFIXES = ("ade20k", "pascal_context", "cityscapes")


class LoopList(Page):
    items: list[lp.LoopView]


def _err(loc: tuple, msg: str) -> dict:
    return {"loc": ("body", *loc), "msg": msg, "type": "value_error"}


def _owned(rt, loop_id: str, tenant: str) -> lp.StoredLoopSpec:
    try:
        stored = lp.read_spec(rt.store, keys.check_id(loop_id, "loop id"))
    except (ValueError, LookupError):
        stored = None
    if stored is None or stored.tenant != tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no loop {loop_id!r}")
    return stored


def loop_view(rt, root: str, stored: lp.StoredLoopSpec, history: bool = True) -> lp.LoopView:
    st = lp.read_status(rt.store, stored.loop_id)
    return lp.LoopView(
        loop_id=stored.loop_id, url=f"{root}/v1/loops/{stored.loop_id}", name=stored.spec.name, state=st.state,
        created_at=st.created_at, updated_at=st.updated_at, round=st.round, rounds=stored.spec.rounds,
        step=st.step, job_id=st.job_id, training_id=st.training_id, checkpoint=st.checkpoint,
        cancel_requested=rt.store.exists(lp.cancel_key(stored.loop_id)), transitions=st.transitions,
        error=st.error, history=lp.read_rounds(rt.store, stored.loop_id) if history else [],
    )


# ------------------------------------------------------------------------------------------------ checks

def check_loop(spec: lp.LoopSpec, rt, tenant: str, settings) -> list[str]:
    """Every check the API can make before the first round: the resolved training categories, or a 422
    naming each field to change. A round's job and training go through the same checks as any job or
    training (shared/submission.py, routes/trainings.py)."""
    train = list(spec.train_categories if spec.train_categories is not None else PRESETS[spec.preset]())
    errors = _check_target(spec, train)
    errors += _check_round_job(spec, train, settings)
    errors += _check_eval_dataset(spec, rt, tenant)
    errors += _check_round_training(spec, rt, tenant, settings)
    if errors:
        raise RequestValidationError(errors)
    return train


def _check_target(spec: lp.LoopSpec, train: list[str]) -> list[dict]:
    known = {normalise_name(t): t for t in train}
    return [_err(("target", i), f"{name!r} is a training category ({known[normalise_name(name)]!r}); the loop "
                                "makes images of novel categories: remove it from target")
            for i, name in enumerate(spec.target) if normalise_name(name) in known]


def _check_round_job(spec: lp.LoopSpec, train: list[str], settings) -> list[dict]:
    """The deployment's limits on a round's job (its largest possible allocation) and its job template."""
    limits = settings.job_limits()
    errors = []
    if len(spec.target) > limits.max_novel_categories:
        errors.append(_err(("target",), f"{len(spec.target)} categories; this deployment accepts at most "
                                        f"{limits.max_novel_categories} per job (DREAMMASK_MAX_NOVEL_CATEGORIES)"))
    if spec.images_per_round > limits.max_scenes_per_job:
        errors.append(_err(("images_per_round",), f"{spec.images_per_round} images; this deployment accepts at "
                                                  f"most {limits.max_scenes_per_job} per job "
                                                  "(DREAMMASK_MAX_SCENES_PER_JOB)"))
    for i, name in enumerate(spec.target):
        if len(name) > limits.max_category_name_length:
            errors.append(_err(("target", i), f"name is {len(name)} characters; the limit is "
                                              f"{limits.max_category_name_length}"))
    if errors:
        return errors
    stub = lp.StoredLoopSpec(loop_id="check", tenant="check", created_at=utcnow(), spec=spec, train_categories=train)
    try:
        job: JobSpec = lp.job_spec(stub, 1, {name: 1 for name in spec.target})
    except ValueError as e:
        return [_err(("job",), str(e))]
    _, _, problems = job_problems(job, settings)
    return [_err(("job", *loc) if loc and loc[0] != "category_budget" else ("target",), msg) for loc, msg in problems]


def _eval_classes(name: str, rt, tenant: str) -> list[str] | None:
    """The class names of the evaluation dataset, where the API can know them (None: it cannot)."""
    if name.startswith("synthetic:"):
        try:
            m = rt.store.try_get_model(keys.dataset_manifest(name.split(":", 1)[1]), DatasetManifest)
        except ValueError:
            m = None
        return [c.name for c in m.categories] if m is not None and m.tenant == tenant else []
    try:
        from dreammask.trainer.data.builtin import BUILTIN
        from dreammask.trainer.data.toy_world import TOY_WORLD_DATASETS, categories_of
        from dreammask.trainer.data.vocabulary import load_vocabulary_file
    except ImportError:
        return None
    if name in TOY_WORLD_DATASETS:
        return [c[1] for c in categories_of("all" if name != "toy_world_train" else "base")]
    if name in BUILTIN:
        return [n for syns in load_vocabulary_file(BUILTIN[name].vocabulary).synonyms for n in syns]
    return None


def _check_eval_dataset(spec: lp.LoopSpec, rt, tenant: str) -> list[dict]:
    name = spec.eval_dataset
    if name.lower().startswith(ZERO_SHOT_PREFIXES):
        return [_err(("eval_dataset",), f"{name!r} is a zero-shot evaluation set: its label lists serve evaluation "
                                        "only, and a loop steers synthesis by what it evaluates. Evaluate on a "
                                        "validation set of your own, the toy world (toy_world_val) or a curated "
                                        "dataset (synthetic:<id>)")]
    if name.startswith("synthetic:"):
        ds = name.split(":", 1)[1]
        try:
            m = rt.store.try_get_model(keys.dataset_manifest(ds), DatasetManifest)
        except ValueError:  # not an id
            m = None
        if m is None or m.tenant != tenant:
            return [_err(("eval_dataset",), f"no dataset {ds!r} of yours")]
    classes = _eval_classes(name, rt, tenant)
    if not classes:
        return []
    have = {normalise_name(c) for c in classes}
    errors = []
    for i, t in enumerate(spec.target):
        if normalise_name(t) not in have:
            near = closest(t, classes)
            errors.append(_err(("target", i), f"{t!r} is not a class of {name}, so the loop could never measure "
                                              "it" + (f"; did you mean {near!r}?" if near else "")))
    return errors


def _check_round_training(spec: lp.LoopSpec, rt, tenant: str, settings) -> list[dict]:
    """A round's training request through the checks of POST /v1/trainings (config, overrides, datasets,
    weights), with its fields named as the loop spells them."""
    from dreammask.trainer.service.schemas import TrainingSpec
    from dreammask.trainer.service.settings import TrainerSettings

    from .trainings import _check_config, _check_real_datasets, _check_weights_to_evaluate

    ts = TrainerSettings()
    stub = lp.StoredLoopSpec(loop_id="check", tenant=tenant, created_at=utcnow(), spec=spec, train_categories=[])
    try:
        req = TrainingSpec(**lp.training_request(stub, 1, [], spec.weights))
    except ValueError as e:
        return [_err(("training",), str(e))]
    where = {"config": ("training", "config"), "tiny": ("training", "tiny"), "overrides": ("training", "overrides"),
             "iterations": ("training", "iterations"), "gpus": ("training", "gpus"), "eval_datasets": ("eval_dataset",)}
    errors = []
    for e in _check_real_datasets(req, ts) + _check_config(req, ts, settings) + (
            _check_weights_to_evaluate(req, rt, tenant, settings) if spec.weights else []):
        loc = tuple(e["loc"][1:])
        head = where.get(loc[0]) if loc else None
        if head is not None:
            loc = head + (loc[1:] if loc[0] not in ("eval_datasets",) else ())
        errors.append(_err(loc, e["msg"]))
    for field, n in (("iterations", spec.training.iterations), ("base_iterations", spec.training.base_iterations)):
        if n is not None and n > ts.trainer_max_iterations:
            errors.append(_err(("training", field), f"at most {ts.trainer_max_iterations} iterations on this deployment"))
    if len(spec.training.overrides) > ts.trainer_max_overrides:
        errors.append(_err(("training", "overrides"), f"at most {ts.trainer_max_overrides} overrides"))
    return errors


# ------------------------------------------------------------------------------------------------ routes

@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=lp.LoopView, responses=responses(
    413, 422, e422={"detail": [{"loc": ["body", "target", 0], "type": "value_error",
                                "msg": "'kyte' is not a class of toy_world_val, so the loop could never measure it; "
                                       "did you mean 'kite'?"}]}))
def submit_loop(spec: Annotated[lp.LoopSpec, Body(openapi_examples=LOOP_SPEC_EXAMPLES)], request: Request,
                response: Response, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep):
    """Start a closed loop: N rounds of evaluate per class, allocate the next job's images by deficit,
    synthesise, train from the previous checkpoint on real + every synthetic dataset so far, evaluate again."""
    train = check_loop(spec, rt, tenant, settings)
    st = lp.create_loop(rt.store, rt.redis, tenant, spec, train)
    try:
        rt.dispatcher.send(TASK_LOOP_ADVANCE, st.loop_id)
    except Exception as e:  # noqa: BLE001 - saved: the supervisor's next sweep starts it once the broker is back
        log.warning("loop %s saved but its first message was not sent: %s", st.loop_id, e)
    view = loop_view(rt, base_url(request, settings), lp.read_spec(rt.store, st.loop_id))
    response.headers["Location"] = view.url
    return view


@router.get("", response_model=LoopList, responses=responses(422))
def list_loops(request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep,
               limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Annotated[int, Query(ge=0)] = 0):
    """Your loops, newest first (without their rounds: GET /v1/loops/{id} has them)."""
    ids = sorted(lp.list_loops(rt.store, tenant), reverse=True)
    root = base_url(request, settings)
    items = [loop_view(rt, root, _owned(rt, i, tenant), history=False) for i in ids[offset:offset + limit]]
    return {"items": items, "total": len(ids), "limit": limit, "offset": offset}


@router.get("/{loop_id}", response_model=lp.LoopView, responses=responses(404, 422, **_NO_LOOP))
def get_loop(loop_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep):
    """The loop's state and every round so far: allocation, job and dataset, training, checkpoint, per-class IoU."""
    return loop_view(rt, base_url(request, settings), _owned(rt, loop_id, tenant))


@router.post("/{loop_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=lp.LoopView,
             responses=responses(404, 409, 422, **_NO_LOOP))
def cancel_loop(loop_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, tenant: TenantDep):
    """Stop the loop: its running job or training is cancelled with it, at its next step."""
    stored = _owned(rt, loop_id, tenant)
    st = lp.read_status(rt.store, loop_id)
    if st.state.terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, f"loop {loop_id} already {st.state.value}")
    rt.store.put_bytes(lp.cancel_key(loop_id), utcnow().isoformat().encode(), "text/plain")
    if st.state == lp.LoopState.queued:
        lp.transition(rt.store, st, lp.LoopState.cancelled, "cancelled while queued")
    else:
        try:
            rt.dispatcher.send(TASK_LOOP_ADVANCE, loop_id)
        except Exception as e:  # noqa: BLE001 - the flag is stored: the supervisor's next sweep acts on it
            log.warning("loop %s: cancel stored, message not sent: %s", loop_id, e)
    return loop_view(rt, base_url(request, settings), stored)
