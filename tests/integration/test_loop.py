"""The closed loop end to end in one process: the API's POST /v1/loops, the loop's state machine, the real job
chain on the embedded backends, the training service's runner on the tiny model and the toy world, two
rounds. Checks the records, the allocation rule against the figures it read, that round 2 trains from round
1's checkpoint on both rounds' datasets, and that the loop goes on from its record after a restart."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dreammask.services.api.main import create_app
from dreammask.services.cli.inprocess import in_process_dispatcher, run_loop, run_pending
from dreammask.shared import loops as lp
from dreammask.shared import quotas
from dreammask.shared.celery_app import TASK_LOOP_ADVANCE, TASK_TRAIN
from dreammask.shared.runtime import build_runtime, set_runtime
from dreammask.shared.schemas import JobPlan
from dreammask.shared.settings import Settings
from dreammask.trainer.data.toy_world import BASE
from dreammask.trainer.service.record import read_spec as read_training_spec
from dreammask.trainer.service.record import read_status as read_training_status
from dreammask.trainer.service.settings import TrainerSettings

KEY = {"Authorization": "Bearer key-alice"}
# The random CLIP's out-of-vocabulary opinion is noise: the trained classifier alone (as bench/loop.py does).
OVERRIDES = {"MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_ALPHA": 0.0, "MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_BETA": 0.0,
             "ENGINE.STATUS_PERIOD": 1, "SOLVER.IMS_PER_BATCH": 2}


def loop_spec(**over) -> dict:
    spec = {"name": "toy loop", "train_categories": BASE, "target": ["kite", "awning"], "rounds": 2,
            "images_per_round": 3, "real_datasets": ["toy_world_train"], "eval_dataset": "toy_world_val",
            "job": {"image_size": 64, "seed": 5},
            "training": {"iterations": 2, "base_iterations": 2, "tiny": True, "overrides": OVERRIDES}}
    spec.update(over)
    return spec


@pytest.fixture()
def platform_in_process(tmp_path, redis_client, redis_url, shared_cache_dir, monkeypatch):
    monkeypatch.setenv("DREAMMASK_TOY_WORLD_DIR", str(tmp_path / "toy-world"))

    def build(**over):
        s = Settings(redis_url=redis_url, storage_root=tmp_path / "objects", cache_dir=shared_cache_dir,
                     api_keys={"key-alice": "alice"}, public_base_url="http://api.test", **over)
        d = in_process_dispatcher(trainer_settings=TrainerSettings(trainer_cache_dir=tmp_path / "trainer-cache"))
        rt = build_runtime(s, dispatcher=d)
        set_runtime(rt)
        return s, rt

    yield build
    set_runtime(None)


@pytest.mark.integration
def test_two_rounds_steer_train_on_and_record(platform_in_process):
    settings, rt = platform_in_process()
    with TestClient(create_app(settings, rt), base_url="http://api.test") as api:
        r = api.post("/v1/loops", json=loop_spec(), headers=KEY)
        assert r.status_code == 202, r.text
        loop_id = r.json()["loop_id"]
        assert r.json()["state"] == "queued" and r.headers["Location"].endswith(loop_id)

        # Round 0 starts; then a "restart": a fresh runtime (a new worker process) goes on from the record.
        run_pending(rt, until=TASK_TRAIN)
        assert lp.read_status(rt.store, loop_id).step == "training"
        round0 = lp.read_round(rt.store, loop_id, 0)
        settings, rt = platform_in_process()
        rt.dispatcher.send(TASK_TRAIN, round0.training_id)  # the message the lost worker held, redelivered
        rt.dispatcher.send(TASK_LOOP_ADVANCE, loop_id)  # and one the supervisor sends meanwhile: no double work
        final = run_loop(rt, loop_id)
        assert final.state == lp.LoopState.succeeded, final
        view = api.get(f"/v1/loops/{loop_id}", headers=KEY).json()

    rounds = lp.read_rounds(rt.store, loop_id)
    assert [x.round for x in rounds] == [0, 1, 2]
    assert [x["round"] for x in view["history"]] == [0, 1, 2] and view["state"] == "succeeded"
    r0, r1, r2 = rounds
    # Round 0: the real data alone, no allocation, figures of every class of the evaluation set.
    assert r0.allocation is None and r0.job_id is None and r0.datasets == []
    assert set(r0.per_class) == {"sky", "grass", "cat", "table", "kite", "awning", "lamp", "bench", "ball"}
    assert read_training_spec(rt.store, r0.training_id).spec.real_datasets == ["toy_world_train"]
    for prev, cur in ((r0, r1), (r1, r2)):
        # The allocation is the rule applied to the previous round's IoU of each target category.
        ious = {t: lp.class_iou(prev.per_class, t) for t in ("kite", "awning")}
        assert cur.ious_before == ious
        assert cur.allocation == lp.allocate(3, ious, floor=lp.DEFAULT_FLOOR).counts
        assert sum(cur.allocation.values()) == 3 and min(cur.allocation.values()) >= 1
        # The job rendered exactly the allocation, through its plan.
        plan = rt.store.get_model(f"jobs/{cur.job_id}/plan.json", JobPlan)
        assert plan.category_budget == cur.allocation
        assert [s.novel_category for s in plan.scenes] == [n for n, c in cur.allocation.items() for _ in range(c)]
        # Trained from the previous round's checkpoint, on the real data and every synthetic dataset so far.
        tspec = read_training_spec(rt.store, cur.training_id).spec
        assert cur.trained_from == prev.checkpoint == prev.training_id
        assert tspec.weights == prev.training_id and tspec.real_datasets == ["toy_world_train"]
        tstatus = read_training_status(rt.store, cur.training_id)
        assert tstatus.state.value == "succeeded"
        assert tstatus.result["weights_report"] and "loaded" in tstatus.result["weights_report"]
        assert cur.checkpoint_key == tstatus.checkpoint and rt.store.exists(cur.checkpoint_key)
        # ... the very file of the previous round's checkpoint (copied from storage into the trainer's cache).
        config = rt.store.get_bytes(f"trainings/{cur.training_id}/config.yaml").decode()
        assert f"checkpoints/{prev.training_id}/{prev.checkpoint_key.rsplit('/', 1)[1]}" in config
        assert cur.per_class and cur.target_mean_iou is not None
    assert r1.datasets == [r1.dataset_id] and r2.datasets == [r1.dataset_id, r2.dataset_id]
    st = lp.read_status(rt.store, loop_id)
    assert [t.state.value for t in st.transitions][0] == "queued" and st.transitions[-1].state.value == "succeeded"
    assert st.checkpoint == r2.training_id
    # One training per round and one job per round: the redelivered and the extra messages made nothing twice.
    trainings = {k.split("/")[1] for k in rt.store.list("trainings/") if k.endswith("/spec.json")}
    assert trainings == {r0.training_id, r1.training_id, r2.training_id}
    jobs = {k.split("/")[1] for k in rt.store.list("jobs/") if k.endswith("/spec.json")}
    assert jobs == {r1.job_id, r2.job_id}
    assert loop_id not in lp.active_loops(rt.store, rt.redis)


@pytest.mark.integration
def test_a_loop_through_the_platform_processes(platform, tmp_path):
    """The same loop, one round, on real worker processes: the loop worker on its queue, the supervisor's
    sweep as the only thing that looks at the loop again while it waits."""
    import time

    p = platform(extra_workers=[("training", "dreammask.trainer.service.worker", "training"),
                                ("loop", "dreammask.services.loop.worker", "loop")],
                 env={"DREAMMASK_SUPERVISOR_INTERVAL_S": "1", "DREAMMASK_TRAINER_CACHE_DIR": "cache/datasets",
                      "DREAMMASK_TOY_WORLD_DIR": str(tmp_path / "toy-world")})
    r = p.client.post("/v1/loops", json=loop_spec(rounds=1))
    assert r.status_code == 202, r.text
    loop_id = r.json()["loop_id"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        view = p.client.get(f"/v1/loops/{loop_id}").json()
        if view["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1)
    assert view["state"] == "succeeded", (view, p.tail_logs())
    r0, r1 = view["history"]
    assert r1["allocation"] and sum(r1["allocation"].values()) == 3 and r1["trained_from"] == r0["training_id"]
    assert p.client.get(f"/v1/trainings/{r1['training_id']}").json()["state"] == "succeeded"
    assert p.client.get(f"/v1/jobs/{r1['job_id']}").json()["dataset_id"] == r1["dataset_id"]


@pytest.mark.integration
def test_cancel_stops_the_loop_and_what_it_runs(platform_in_process):
    settings, rt = platform_in_process()
    with TestClient(create_app(settings, rt), base_url="http://api.test") as api:
        loop_id = api.post("/v1/loops", json=loop_spec(), headers=KEY).json()["loop_id"]
        run_pending(rt, until=TASK_TRAIN)  # round 0's training is created and queued, not run
        tid = lp.read_round(rt.store, loop_id, 0).training_id
        r = api.post(f"/v1/loops/{loop_id}/cancel", headers=KEY)
        assert r.status_code == 202 and r.json()["cancel_requested"]
        rt.dispatcher.pending.popleft()  # the training message: the worker would find it cancelled
        run_pending(rt)
        st = lp.read_status(rt.store, loop_id)
        assert st.state == lp.LoopState.cancelled and "round 0" in st.transitions[-1].reason
        assert read_training_status(rt.store, tid).state.value == "cancelled"
        assert loop_id not in lp.active_loops(rt.store, rt.redis)
        assert api.post(f"/v1/loops/{loop_id}/cancel", headers=KEY).status_code == 409


@pytest.mark.integration
def test_a_failed_training_fails_the_loop_with_its_reason(platform_in_process):
    settings, rt = platform_in_process()
    with TestClient(create_app(settings, rt), base_url="http://api.test") as api:
        loop_id = api.post("/v1/loops", json=loop_spec(), headers=KEY).json()["loop_id"]
        run_pending(rt, until=TASK_TRAIN)
        tid = lp.read_round(rt.store, loop_id, 0).training_id
        assert api.post(f"/v1/trainings/{tid}/cancel", headers=KEY).status_code == 202  # someone stops it
        final = run_loop(rt, loop_id)
        assert final.state == lp.LoopState.failed
        assert final.error == f"round 0: training {tid} cancelled"
        assert lp.read_round(rt.store, loop_id, 1) is None  # nothing after the failure


@pytest.mark.integration
def test_a_rounds_job_counts_against_the_quota_and_waits_for_it(platform_in_process):
    """A loop's synthesis job is a job like any other: over the tenant's job quota the round waits (said once
    in the loop's record), and goes on once a slot is free."""
    settings, rt = platform_in_process(quota_active_jobs=1)
    with TestClient(create_app(settings, rt), base_url="http://api.test") as api:
        # The tenant's one job slot is taken by a job of its own, queued (its messages are never delivered).
        busy = api.post("/v1/jobs", json={"train_categories": BASE, "num_novel": 1, "images_per_category": 1,
                                          "image_size": 64}, headers=KEY)
        assert busy.status_code == 202, busy.text
        rt.dispatcher.pending.clear()
        loop_id = api.post("/v1/loops", json=loop_spec(rounds=1), headers=KEY).json()["loop_id"]
    for _ in range(3):  # round 0 trains on the real data; then every advance finds the quota used up
        run_pending(rt)
        rt.dispatcher.send(TASK_LOOP_ADVANCE, loop_id)
    run_pending(rt)
    st = lp.read_status(rt.store, loop_id)
    assert st.state == lp.LoopState.running and st.round == 0
    waits = [t.reason for t in st.transitions if "waits for a quota" in (t.reason or "")]
    assert len(waits) == 1 and "active_jobs" in waits[0], st.transitions
    r1 = lp.read_round(rt.store, loop_id, 1)
    assert r1.job_id is not None and not any(True for _ in rt.store.list(f"jobs/{r1.job_id}/"))

    settings, rt = platform_in_process()  # the operator raises the quota (or a job ended)
    final = run_loop(rt, loop_id)
    assert final.state == lp.LoopState.succeeded, final
    assert lp.read_round(rt.store, loop_id, 1).job_id == r1.job_id and rt.store.exists(f"jobs/{r1.job_id}/spec.json")


@pytest.mark.integration
def test_a_rounds_training_counts_against_the_training_quota_and_waits_for_it(platform_in_process):
    """A loop's training is a training like any other: over the tenant's quota of unfinished trainings the
    round waits (said once, nothing created), and starts its training once a slot is free."""
    settings, rt = platform_in_process(quota_active_trainings=1)
    with TestClient(create_app(settings, rt), base_url="http://api.test") as api:
        # The tenant's one training slot is taken by a training of its own, queued (never delivered).
        busy = api.post("/v1/trainings", json={"real_datasets": ["toy_world_train"], "iterations": 2, "tiny": True},
                        headers=KEY)
        assert busy.status_code == 202, busy.text
        rt.dispatcher.pending.clear()
        loop_id = api.post("/v1/loops", json=loop_spec(rounds=1), headers=KEY).json()["loop_id"]
        for _ in range(3):  # every advance finds the quota used up
            run_pending(rt)
            rt.dispatcher.send(TASK_LOOP_ADVANCE, loop_id)
        run_pending(rt)
        st = lp.read_status(rt.store, loop_id)
        assert not st.state.terminal and st.step == "start", st
        waits = [t.reason for t in st.transitions if "waits for a quota" in (t.reason or "")]
        assert len(waits) == 1 and "active_trainings" in waits[0], st.transitions
        r0 = lp.read_round(rt.store, loop_id, 0)
        assert r0.training_id is not None and not rt.store.exists(f"trainings/{r0.training_id}/spec.json")

        # The busy training is cancelled: the next advance starts the round's training in the freed slot.
        assert api.post(f"/v1/trainings/{busy.json()['training_id']}/cancel", headers=KEY).status_code == 202
    rt.dispatcher.send(TASK_LOOP_ADVANCE, loop_id)
    run_pending(rt, until=TASK_TRAIN)
    st = lp.read_status(rt.store, loop_id)
    assert st.step == "training" and st.training_id == r0.training_id, st
    assert read_training_status(rt.store, r0.training_id).state.value == "queued"
    assert quotas.active_trainings(rt.redis, "alice") == {r0.training_id}
    # Cancelling the loop cancels its queued training, which frees the slot.
    rt.store.put_bytes(lp.cancel_key(loop_id), b"1")
    rt.dispatcher.handlers[TASK_LOOP_ADVANCE](rt, loop_id)
    assert lp.read_status(rt.store, loop_id).state == lp.LoopState.cancelled
    assert read_training_status(rt.store, r0.training_id).state.value == "cancelled"
    assert quotas.active_trainings(rt.redis, "alice") == set()
