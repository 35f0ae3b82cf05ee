"""The plain function behind the training task: status with iteration, losses and evaluation; cancel;
a finished training is not rerun."""

import json
import threading
import time

import pytest

from dreammask.shared.storage import LocalObjectStore
from dreammask.trainer.data.toy import write_toy_dataset
from dreammask.trainer.service.runner import create_training, read_status, run_training_job
from dreammask.trainer.service.schemas import TrainingSpec, cancel_key
from dreammask.trainer.service.settings import TrainerSettings


def _settings(tmp_path):
    return TrainerSettings(trainer_cache_dir=tmp_path / "cache")


class CountingStore(LocalObjectStore):
    def __init__(self, root):
        super().__init__(root)
        self.writes: dict[str, int] = {}

    def put_bytes(self, key, data, *args, **kwargs):
        self.writes[key] = self.writes.get(key, 0) + 1
        return super().put_bytes(key, data, *args, **kwargs)


def test_run_to_the_end_records_status_metrics_and_checkpoint(tmp_path):
    store = CountingStore(tmp_path / "objects")
    write_toy_dataset(store, "ds-r", num_images=2, size=48)
    spec = TrainingSpec(datasets=["ds-r"], eval_datasets=["synthetic:ds-r"], iterations=3, tiny=True,
                        overrides={"ENGINE.STATUS_PERIOD": 1, "ENGINE.LOG_PERIOD": 1})
    tid = create_training(store, "alice", spec).training_id
    final = run_training_job(store, tid, _settings(tmp_path))
    assert final["state"] == "succeeded", final
    st = read_status(store, tid)
    assert st.iteration == 3 and st.max_iter == 3
    assert st.losses["total_loss"] > 0 and "loss_sra" in st.losses
    assert 0 <= st.latest_eval["synthetic:ds-r"]["mIoU"] <= 100 and "PQ" in st.latest_eval["synthetic:ds-r"]
    assert st.checkpoint == f"trainings/{tid}/checkpoints/model_0000003.pth"
    assert store.writes[f"trainings/{tid}/config.yaml"] == 1  # the resolved config, written once
    assert "SOLVER:" in store.get_bytes(f"trainings/{tid}/config.yaml").decode()
    assert [t.state.value for t in st.transitions] == ["queued", "running", "succeeded"]
    assert any("SRA is off" in n and "memory bank stays empty" in n for n in st.notes)
    lines = [json.loads(x) for x in store.get_bytes(f"trainings/{tid}/metrics.jsonl").decode().splitlines()]
    assert [x["iteration"] for x in lines if "total_loss" in x] == [0, 1, 2]
    # a redelivered message for a finished training does nothing
    assert run_training_job(store, tid, _settings(tmp_path))["state"] == "succeeded"
    assert len(read_status(store, tid).transitions) == 3


def test_cancel_stops_the_loop_and_keeps_a_checkpoint(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    write_toy_dataset(store, "ds-c", num_images=2, size=48)
    spec = TrainingSpec(datasets=["ds-c"], iterations=200, tiny=True, overrides={"ENGINE.STATUS_PERIOD": 1})
    tid = create_training(store, "alice", spec).training_id

    def cancel_when_running():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if read_status(store, tid).iteration >= 2:
                store.put_bytes(cancel_key(tid), b"now")
                return
            time.sleep(0.05)

    t = threading.Thread(target=cancel_when_running)
    t.start()
    final = run_training_job(store, tid, _settings(tmp_path))
    t.join()
    assert final["state"] == "cancelled"
    st = read_status(store, tid)
    assert 2 <= st.iteration < 200
    last = store.get_bytes(f"trainings/{tid}/last_checkpoint").decode()
    assert last == f"model_{st.iteration:07d}.pth"


def test_bad_spec_fails_with_its_reason(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    spec = TrainingSpec(datasets=["ds-none"], iterations=3, tiny=True)
    tid = create_training(store, "alice", spec).training_id
    with pytest.raises(FileNotFoundError, match="ds-none"):
        run_training_job(store, tid, _settings(tmp_path))
    st = read_status(store, tid)
    assert st.state.value == "failed" and "ds-none" in st.error


def test_the_runner_applies_the_request_rule_to_a_stored_spec(tmp_path):
    """A record written without the API (an old one, a script) meets the same rule: the training fails at once,
    its error naming the key and what to use instead; nothing trains."""
    store = LocalObjectStore(tmp_path / "objects")
    write_toy_dataset(store, "ds-w", num_images=2, size=48)
    spec = TrainingSpec(datasets=["ds-w"], iterations=2, tiny=True,
                        overrides={"MODEL.WEIGHTS": str(tmp_path / "elsewhere.pth")})
    tid = create_training(store, "alice", spec).training_id
    with pytest.raises(ValueError):
        run_training_job(store, tid, _settings(tmp_path))
    st = read_status(store, tid)
    assert st.state.value == "failed" and "MODEL.WEIGHTS" in st.error and "`weights` field" in st.error
    assert not store.exists(f"trainings/{tid}/last_checkpoint")
