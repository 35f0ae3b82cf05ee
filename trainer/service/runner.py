"""Runs one training from its stored record: the plain function behind the `dreammask.training.run` task.

The record under trainings/{id}/ is the truth: spec.json (what was asked), status.json (state, iteration,
latest losses and evaluation, heartbeat), metrics.jsonl, checkpoints/, last_checkpoint and a `cancel`
flag the API sets. Running again resumes from the last checkpoint; a finished training is not rerun.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from dreammask.shared import keys
from dreammask.shared.storage import ObjectNotFound, ObjectStore
from dreammask.trainer.config import build_training_cfg

from .record import create_training, is_stale, read_status, transition, write_status  # noqa: F401  (re-exported)
from .schemas import (
    TRAINING_WEIGHTS_RE,
    StoredTrainingSpec,
    TrainingState,
    TrainingStatus,
    cancel_key,
    spec_key,
    spec_notes,
)
from .settings import TrainerSettings

log = logging.getLogger("dreammask.trainer.service")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class StatusReporter:
    """The progress callback of the loop (main process): writes status.json, reads the cancel flag."""

    def __init__(self, store: ObjectStore, training_id: str):
        self.store, self.training_id = store, training_id

    def __call__(self, trainer, final: bool) -> bool:
        status = read_status(self.store, self.training_id)
        status.iteration = trainer.iter + 1 if trainer.iter >= trainer.start_iter else trainer.start_iter
        status.max_iter = trainer.max_iter
        status.losses = dict(trainer.latest_losses)
        if trainer.latest_eval:
            status.latest_eval = dict(trainer.latest_eval)
        if trainer.last_checkpoint:
            status.checkpoint = trainer.last_checkpoint
        status.worker = worker_name()
        write_status(self.store, status)
        return self.store.exists(cancel_key(self.training_id))


def run_training_job(store: ObjectStore, training_id: str, settings: TrainerSettings | None = None) -> dict:
    """Run or resume a stored training to its end; returns its final status as a dict."""
    settings = settings or TrainerSettings()
    stored = store.get_model(spec_key(training_id), StoredTrainingSpec)
    status = read_status(store, training_id)
    if status.state.terminal:
        log.info("training %s is already %s", training_id, status.state.value)
        return status.model_dump(mode="json")
    if status.state == TrainingState.running and not is_stale(status, settings) and status.worker != worker_name():
        log.warning("training %s is running on %s; not starting it twice", training_id, status.worker)
        return status.model_dump(mode="json")
    if store.exists(cancel_key(training_id)):
        transition(store, status, TrainingState.cancelled, "cancelled before it started")
        return status.model_dump(mode="json")

    status.worker, status.error = worker_name(), None
    transition(store, status, TrainingState.running)
    try:
        cfg = build_training_cfg(stored.spec, settings)
        new = [n for n in spec_notes(stored.spec) if n not in status.notes]
        if new:
            status.notes += new
            write_status(store, status)
        gpus = stored.spec.gpus or settings.trainer_gpus
        if stored.spec.kind == "evaluate":
            result = _run_torchrun(training_id, gpus, settings) if gpus > 1 else \
                run_evaluation(store, training_id, cfg, settings)
            status = read_status(store, training_id)
            status.latest_eval = result.get("datasets")
            status.result = result
            transition(store, status, TrainingState.succeeded)
            return status.model_dump(mode="json")
        if gpus > 1:
            result = _run_torchrun(training_id, gpus, settings)
        else:
            from dreammask.trainer.engine.launch import train

            cfg = with_local_weights(store, cfg, settings)
            result = train(cfg, store, keys.training_prefix(training_id),
                           progress_callback=StatusReporter(store, training_id))
    except Exception as e:  # noqa: BLE001 - every failure ends in the record with its reason
        status = read_status(store, training_id)
        status.error = f"{type(e).__name__}: {e}"
        transition(store, status, TrainingState.failed, status.error)
        log.exception("training %s failed", training_id)
        raise
    status = read_status(store, training_id)
    if result.get("cancelled"):
        transition(store, status, TrainingState.cancelled, f"cancelled at iteration {result.get('iteration')}")
    else:
        status.result = {k: v for k, v in result.items() if k != "eval"}
        transition(store, status, TrainingState.succeeded)
    return status.model_dump(mode="json")


def resolve_weights(store: ObjectStore, weights: str, cache_dir: str | Path) -> str:
    """A local file of the weights an evaluation names: a training's checkpoint ("tr-<id>" for its last one,
    "tr-<id>/model_NNNNNNN.pth") copied from storage into the cache, or a file under the models directory."""
    m = TRAINING_WEIGHTS_RE.match(weights)
    if m:
        tid, name = m.groups()
        prefix = keys.training_prefix(tid)
        if name is None:
            try:
                name = store.get_bytes(prefix + "last_checkpoint").decode().strip()
            except ObjectNotFound:
                raise FileNotFoundError(f"training {tid} has no checkpoint yet") from None
        key = prefix + "checkpoints/" + name
        local = Path(cache_dir) / "checkpoints" / tid / name
        if not local.is_file():
            try:
                data = store.get_bytes(key)
            except ObjectNotFound:
                raise FileNotFoundError(f"no checkpoint {key}") from None
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f"{local.name}.{os.getpid()}.part")
            tmp.write_bytes(data)
            tmp.replace(local)
        return str(local)
    from dreammask.shared.settings import Settings

    path = Path(weights)
    path = path if path.is_absolute() else Path(Settings().models_dir) / path
    if not path.is_file():
        raise FileNotFoundError(f"weights {weights!r} not found at {path}; put the checkpoint under the models "
                                "directory (DREAMMASK_MODELS_DIR)")
    return str(path)


def with_local_weights(store: ObjectStore, cfg, settings: TrainerSettings):
    """The config with MODEL.WEIGHTS made a local file (a training's checkpoint is copied from storage into the
    cache); unchanged when it names none."""
    from dreammask.trainer.config import merge_overrides

    if not str(cfg.MODEL.WEIGHTS):
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    merge_overrides(cfg, {"MODEL.WEIGHTS": resolve_weights(store, str(cfg.MODEL.WEIGHTS), settings.trainer_cache_dir)})
    return cfg


def run_evaluation(store: ObjectStore, training_id: str, cfg, settings: TrainerSettings,
                   data_store: ObjectStore | None = None) -> dict:
    """An evaluation job (every process of it): its weights made local, scored on DATASETS.TEST in fp32;
    evaluation.json and evaluation.md land under trainings/{id}/. Returns the figures per dataset."""
    from dreammask.trainer.data import register_synthetic
    from dreammask.trainer.engine.evaluate import evaluation_only

    cfg = with_local_weights(store, cfg, settings)
    register_synthetic.use_store(data_store or store, settings.trainer_cache_dir)
    evaluation = evaluation_only(cfg, store, keys.training_prefix(training_id))
    return {"weights": evaluation["weights"], "weights_report": evaluation["weights_report"],
            "datasets": {name: d["metrics"] for name, d in evaluation["datasets"].items()}}


def torchrun_command(training_id: str, gpus: int, nnodes: int = 1, node_rank: int = 0,
                     master: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}"]
    if nnodes > 1:
        cmd += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--rdzv-endpoint={master}",
                "--rdzv-backend=c10d", f"--rdzv-id={training_id}"]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", "dreammask.trainer.train_net", "--training-id", training_id]


def _run_torchrun(training_id: str, gpus: int, settings: TrainerSettings) -> dict:
    """Several GPUs on this worker: torchrun starts one process per GPU; rank 0 writes the status."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DREAMMASK_TRAINER_RESULT_DIR": tmp}
        proc = subprocess.run(torchrun_command(training_id, gpus), env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun exited with {proc.returncode}; see the worker's log")
        path = os.path.join(tmp, "rank0.json")
        return json.loads(open(path).read()) if os.path.exists(path) else {}


def wait_for(store: ObjectStore, training_id: str, timeout_s: float = 600, poll_s: float = 0.5) -> TrainingStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            st = read_status(store, training_id)
            if st.state.terminal:
                return st
        except ObjectNotFound:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"training {training_id} did not finish in {timeout_s} s")
        time.sleep(poll_s)
