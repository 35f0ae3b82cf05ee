"""The closed loop as a state machine over its record in storage (shared/loops.py, docs/loop.md).

`advance(rt, loop_id)` is what a `dreammask.loop.advance` message runs: the API sends one when a loop is
submitted or cancelled, the supervisor one per sweep for every unfinished loop. It reads the loop's status,
does every step that can be done now, writes what it decided, and returns; it never waits. So a loop
survives any worker restart: the next message finds the record and goes on from it.

Steps, per round r (round 0 evaluates the starting weights, or trains them on the real data alone):

    start       -> training (round 0 trains)  or  evaluating (round 0 evaluates the given weights)
    synthesis   the round's job (its category_budget = the allocation) is running; when it succeeds, the
                round's training starts from the previous round's checkpoint on real + every dataset so far
    training    when the training succeeded, its final evaluation is the round's per-class figures; then the
    evaluating  next round's allocation and job (step synthesis), or the loop is done

Whatever the loop creates is named in its round record *before* it is created (ids chosen first), and each
message it sends is marked sent after: a message redelivered mid-step finds the job or training and does not
make a second one. Two advances of one loop never run at once (a Redis lock per loop).
"""

from __future__ import annotations

import logging

import redis
from redis.exceptions import LockError

from dreammask.shared import loops as lp
from dreammask.shared import orchestration as orch
from dreammask.shared.celery_app import TASK_TRAIN
from dreammask.shared.jobs import JobNotFound, new_job_id
from dreammask.shared.quotas import QuotaExceeded
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import DatasetManifest, JobState, utcnow
from dreammask.shared.storage import ObjectNotFound
from dreammask.shared.submission import (
    SubmissionRejected,
    create_job,
    new_training_id,
    start_training,
    training_stopped,
)
from dreammask.shared.tasks import TRANSIENT_ERRORS
from dreammask.trainer.service import record as training_record
from dreammask.trainer.service.schemas import (
    EvaluationRequest,
    TrainingSpec,
    TrainingState,
    cancel_key,
    spec_key,
)

log = logging.getLogger("dreammask.loop")

LOCK_TTL_S = 300
MAX_STEPS = 20  # steps one message may take (a loop's steps alternate with waits, so a few at most)
SUMMARY_METRICS = ("mIoU", "mIoU_seen", "mIoU_unseen", "mIoU_base", "mIoU_novel", "PQ", "SQ", "RQ")


class LoopFailed(Exception):
    """A round cannot go on (its job or training failed, or a request was refused): the loop fails with it."""


def advance(rt: Runtime, loop_id: str) -> dict:
    """Take every step of the loop that can be taken now; returns what was done."""
    lock = rt.redis.lock(f"dreammask:loop:{loop_id}:advance", timeout=LOCK_TTL_S)
    if not lock.acquire(blocking=False):
        return {"loop_id": loop_id, "skipped": "another message is advancing this loop"}
    try:
        return _advance(rt, loop_id)
    finally:
        try:
            lock.release()
        except (LockError, redis.RedisError):
            pass


def _advance(rt: Runtime, loop_id: str) -> dict:
    store = rt.store
    stored = lp.read_spec(store, loop_id)
    done: list[str] = []
    for _ in range(MAX_STEPS):
        st = lp.read_status(store, loop_id)
        if st.state.terminal:
            lp.deactivate(rt.redis, loop_id)
            break
        if store.exists(lp.cancel_key(loop_id)):
            _cancel(rt, st)
            done.append("cancelled")
            break
        try:
            moved = _STEPS[st.step](rt, stored, st)
        except LoopFailed as e:
            _fail(rt, st, str(e))
            done.append(f"failed: {e}")
            break
        except QuotaExceeded as e:
            # The round's job or training waits for the tenant's quota (a slot frees when a job or training
            # ends): said once in the record, and tried again at the next advance (the supervisor sends one
            # every sweep).
            reason = f"round {st.round} waits for a quota: {e.message}"
            if not st.transitions or st.transitions[-1].reason != reason:
                lp.transition(store, st, st.state, reason)
            done.append(reason)
            break
        except TRANSIENT_ERRORS:
            raise  # a store or the broker is away: the message is retried, the next sweep sends another
        except Exception as e:  # noqa: BLE001 - a broken step must end the loop with its reason, not spin
            log.exception("loop %s: step %s failed", loop_id, st.step)
            _fail(rt, st, f"step {st.step} of round {st.round} failed: {type(e).__name__}: {e}")
            done.append(f"failed: {e}")
            break
        if not moved:
            break
        done.append(moved)
    return {"loop_id": loop_id, "steps": done}


# ------------------------------------------------------------------------------------------------ steps

def _start(rt: Runtime, stored: lp.StoredLoopSpec, st: lp.LoopStatus) -> str:
    spec = stored.spec
    rnd = lp.read_round(rt.store, stored.loop_id, 0) or lp.LoopRound(loop_id=stored.loop_id, round=0)
    if spec.weights:
        what = f"round 0: evaluating the starting weights {spec.weights} on {spec.eval_dataset}"
        rnd.trained_from = spec.weights
        _ensure_training(rt, stored, rnd, lambda: _evaluation_spec(rt, stored))
        st.step = "evaluating"
    else:
        what = f"round 0: training on the real data ({', '.join(spec.real_datasets)}) alone"
        _ensure_training(rt, stored, rnd, lambda: TrainingSpec(**lp.training_request(stored, 0, [], None)))
        st.step = "training"
    st.round, st.training_id, st.job_id = 0, rnd.training_id, None
    lp.transition(rt.store, st, lp.LoopState.running, f"{what}: training {rnd.training_id}")
    return what


def _evaluated(rt: Runtime, stored: lp.StoredLoopSpec, st: lp.LoopStatus) -> str | None:
    """The round's training (or round 0's evaluation) ended: record its per-class figures, then start the
    next round or finish."""
    store, spec = rt.store, stored.spec
    rnd = lp.read_round(store, stored.loop_id, st.round)
    tstatus = training_record.read_status(store, rnd.training_id)
    if not tstatus.state.terminal:
        return None
    if tstatus.state != TrainingState.succeeded:
        raise LoopFailed(f"round {rnd.round}: training {rnd.training_id} {tstatus.state.value}"
                         + (f": {tstatus.error}" if tstatus.error else ""))
    if rnd.finished_at is None:
        figures = _figures(rt, stored, rnd, tstatus, evaluation=st.step == "evaluating")
        rnd.classes = figures["classes"]
        rnd.per_class = {row["class"]: _iou(row.get("IoU")) for row in figures["classes"]}
        rnd.metrics = {k: figures["metrics"].get(k) for k in SUMMARY_METRICS if k in figures["metrics"]}
        if st.step == "evaluating":
            rnd.checkpoint, rnd.checkpoint_key = spec.weights, None
        else:
            rnd.checkpoint, rnd.checkpoint_key = rnd.training_id, tstatus.checkpoint
        target = [lp.class_iou(rnd.per_class, t) for t in spec.target]
        measured = [v for v in target if v is not None]
        rnd.target_mean_iou = sum(measured) / len(measured) if measured else None
        rnd.target_min_iou = min(measured) if measured else None
        rnd.finished_at = utcnow()
        lp.write_round(store, rnd)
    st.checkpoint = rnd.checkpoint
    summary = (f"round {rnd.round} done: target mean IoU {rnd.target_mean_iou:.1f}, weakest {rnd.target_min_iou:.1f}"
               if rnd.target_mean_iou is not None else f"round {rnd.round} done")
    if rnd.round >= spec.rounds:
        st.step, st.training_id = "done", None
        lp.transition(store, st, lp.LoopState.succeeded, f"{summary}; all {spec.rounds} rounds done")
        lp.deactivate(rt.redis, stored.loop_id)
        return summary
    nxt = _next_round(rt, stored, rnd)
    st.round, st.step, st.training_id, st.job_id = nxt.round, "synthesis", None, nxt.job_id
    alloc = ", ".join(f"{k} {v}" for k, v in nxt.allocation.items())
    lp.transition(store, st, lp.LoopState.running,
                  f"{summary}; round {nxt.round}: job {nxt.job_id} makes {sum(nxt.allocation.values())} images "
                  f"({alloc})")
    return summary


def _next_round(rt: Runtime, stored: lp.StoredLoopSpec, prev: lp.LoopRound) -> lp.LoopRound:
    spec = stored.spec
    nxt = lp.read_round(rt.store, stored.loop_id, prev.round + 1) or lp.LoopRound(loop_id=stored.loop_id,
                                                                                 round=prev.round + 1)
    if nxt.allocation is None:
        ious = {t: lp.class_iou(prev.per_class, t) for t in spec.target}
        alloc = lp.allocate(spec.images_per_round, ious, floor=spec.floor, target_iou=spec.target_iou)
        nxt.ious_before, nxt.deficits, nxt.weights = ious, alloc.deficits, alloc.weights
        nxt.allocation = alloc.counts
        nxt.trained_from = prev.checkpoint
        lp.write_round(rt.store, nxt)
    _ensure_job(rt, stored, nxt)
    return nxt


def _synthesised(rt: Runtime, stored: lp.StoredLoopSpec, st: lp.LoopStatus) -> str | None:
    """The round's job ended: train on the real data and every synthetic dataset so far, from the previous
    round's checkpoint."""
    store = rt.store
    rnd = lp.read_round(store, stored.loop_id, st.round)
    try:
        js = rt.tracker.status(rnd.job_id)
    except JobNotFound:
        raise LoopFailed(f"round {rnd.round}: job {rnd.job_id} has no record") from None
    if not js.state.terminal:
        return None
    if js.state != JobState.succeeded or not js.dataset_id:
        raise LoopFailed(f"round {rnd.round}: job {rnd.job_id} {js.state.value}" + (f": {js.error}" if js.error else ""))
    if rnd.dataset_id is None:
        prev = lp.read_round(store, stored.loop_id, rnd.round - 1)
        rnd.dataset_id = js.dataset_id
        manifest = store.try_get_model(f"datasets/{js.dataset_id}/manifest.json", DatasetManifest)
        # A dataset whose every image the selection rejected has nothing to train on: it is recorded, not used.
        rnd.datasets = list(prev.datasets) + ([js.dataset_id] if manifest is not None and manifest.images else [])
        rnd.trained_from = prev.checkpoint
        lp.write_round(store, rnd)
    _ensure_training(rt, stored, rnd, lambda: TrainingSpec(**lp.training_request(
        stored, rnd.round, rnd.datasets, rnd.trained_from)))
    st.step, st.job_id, st.training_id = "training", None, rnd.training_id
    what = (f"round {rnd.round}: training {rnd.training_id} from {rnd.trained_from} on "
            f"{len(rnd.datasets)} synthetic dataset(s) and the real data")
    lp.transition(store, st, lp.LoopState.running, what)
    return what


def _finished(rt: Runtime, stored: lp.StoredLoopSpec, st: lp.LoopStatus) -> None:
    return None


_STEPS = {"start": _start, "training": _evaluated, "evaluating": _evaluated, "synthesis": _synthesised,
          "done": _finished}


# ------------------------------------------------------------------------------------------------ helpers

def _evaluation_spec(rt: Runtime, stored: lp.StoredLoopSpec) -> TrainingSpec:
    req = EvaluationRequest(**lp.evaluation_request(stored))
    trained = None
    tid = (stored.spec.weights or "").split("/", 1)[0]
    if tid.startswith("tr-"):
        try:
            trained = training_record.read_spec(rt.store, tid).spec
        except ObjectNotFound:
            raise LoopFailed(f"the starting weights name training {tid}, which has no record") from None
    return req.to_spec(trained)


def _ensure_training(rt: Runtime, stored: lp.StoredLoopSpec, rnd: lp.LoopRound, make_spec) -> None:
    """The round's training: its id recorded first, then its slot of the tenant's training quota and its
    record (quotas.QuotaExceeded: the round waits), then its message (each once)."""
    store = rt.store
    if rnd.training_id is None:
        rnd.training_id = new_training_id()
        lp.write_round(store, rnd)
    if not store.exists(spec_key(rnd.training_id)):
        try:
            spec = make_spec()
        except ValueError as e:
            raise LoopFailed(f"round {rnd.round}: its training request is refused: {e}") from None
        start_training(rt, stored.tenant, lambda tid: training_record.create_training(
            store, stored.tenant, spec, training_id=tid), training_id=rnd.training_id)
    if not rnd.training_sent:
        rt.dispatcher.send(TASK_TRAIN, rnd.training_id)
        rnd.training_sent = True
        lp.write_round(store, rnd)


def _ensure_job(rt: Runtime, stored: lp.StoredLoopSpec, rnd: lp.LoopRound) -> None:
    """The round's synthesis job, through the submission checks every job passes: id first, then the job,
    then its first message."""
    store = rt.store
    if rnd.job_id is None:
        rnd.job_id = new_job_id()
        lp.write_round(store, rnd)
    try:
        rt.tracker.spec(rnd.job_id)
    except JobNotFound:
        try:
            create_job(rt, lp.job_spec(stored, rnd.round, rnd.allocation), stored.tenant, job_id=rnd.job_id)
        except (SubmissionRejected, ValueError) as e:
            raise LoopFailed(f"round {rnd.round}: its synthesis job is refused: {e}") from None
    if not rnd.job_sent:
        orch.start(rt, rnd.job_id)
        rnd.job_sent = True
        lp.write_round(store, rnd)


def _figures(rt: Runtime, stored: lp.StoredLoopSpec, rnd: lp.LoopRound, tstatus, evaluation: bool) -> dict:
    """{"metrics", "classes"} of the loop's evaluation dataset: from the evaluation job's evaluation.json, or
    from the training's evaluation at its last iteration (the same evaluator, trainer/engine/evaluate.py)."""
    name = stored.spec.eval_dataset
    if evaluation:
        try:
            ev = rt.store.get_json(f"trainings/{rnd.training_id}/evaluation.json")
        except ObjectNotFound:
            raise LoopFailed(f"round 0: evaluation {rnd.training_id} wrote no evaluation.json") from None
        d = ev.get("datasets", {}).get(name)
        if d is None:
            raise LoopFailed(f"round 0: evaluation {rnd.training_id} has no figures for {name}")
        return {"metrics": d.get("metrics") or {}, "classes": d.get("classes") or []}
    latest = tstatus.latest_eval or {}
    if latest.get("iteration") != tstatus.max_iter or name not in latest:
        raise LoopFailed(f"round {rnd.round}: training {rnd.training_id} has no evaluation of {name} at its last "
                         f"iteration {tstatus.max_iter} (TEST.EVAL_PERIOD in the loop's overrides?)")
    d = latest[name]
    return {"metrics": {k: v for k, v in d.items() if k != "classes"}, "classes": d.get("classes") or []}


def _iou(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None


def _cancel(rt: Runtime, st: lp.LoopStatus) -> None:
    """Stop what the loop waits for, then the loop."""
    if st.job_id:
        try:
            if not rt.tracker.status(st.job_id).state.terminal:
                rt.tracker.cancel(st.job_id)
        except JobNotFound:
            pass
    if st.training_id:
        try:
            ts = training_record.read_status(rt.store, st.training_id)
            if not ts.state.terminal:
                rt.store.put_bytes(cancel_key(st.training_id), utcnow().isoformat().encode(), "text/plain")
                if ts.state == TrainingState.queued:
                    training_record.transition(rt.store, ts, TrainingState.cancelled, "its loop was cancelled")
                    training_stopped(rt, ts.tenant, st.training_id)
        except ObjectNotFound:
            pass
    lp.transition(rt.store, st, lp.LoopState.cancelled, f"cancelled in round {st.round} ({st.step})")
    lp.deactivate(rt.redis, st.loop_id)


def _fail(rt: Runtime, st: lp.LoopStatus, reason: str) -> None:
    st.error = reason
    lp.transition(rt.store, st, lp.LoopState.failed, reason)
    lp.deactivate(rt.redis, st.loop_id)
