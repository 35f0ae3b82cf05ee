"""Training hooks (detectron2's HookBase shape): checkpoints, periodic evaluation, JSON-lines metrics,
progress/cancel callbacks. Each runs in every process; only the main process writes to storage."""

from __future__ import annotations

import json
import math
import time

from dreammask.shared.storage import ObjectNotFound, ObjectStore

from .. import distributed as dist


class TrainingCancelled(Exception):
    """Raised inside the loop when the training's cancel flag is set."""


class HookBase:
    def before_train(self, trainer) -> None: ...

    def after_step(self, trainer) -> None: ...

    def after_train(self, trainer) -> None: ...


def _due(trainer, period: int) -> bool:
    nxt = trainer.iter + 1
    return bool(period) and (nxt % period == 0 or nxt == trainer.max_iter)


class PeriodicCheckpointer(HookBase):
    def __init__(self, period: int):
        self.period = period

    def after_step(self, trainer) -> None:
        if _due(trainer, self.period) or (trainer.iter + 1 == trainer.max_iter):
            trainer.save_checkpoint(trainer.iter + 1)

    def after_train(self, trainer) -> None:
        # A cancelled run keeps its place, so it can be resumed.
        if trainer.cancelled and trainer.iter >= trainer.start_iter:
            trainer.save_checkpoint(trainer.iter + 1)


class EvalHook(HookBase):
    def __init__(self, period: int):
        self.period = period

    def after_step(self, trainer) -> None:
        if _due(trainer, self.period):
            trainer.run_evaluation(final=trainer.iter + 1 == trainer.max_iter)


class JSONMetricsWriter(HookBase):
    """Appends one JSON object per logged iteration (and per evaluation) to `{prefix}metrics.jsonl`.

    Object stores have no append: the file is rewritten every `period` steps from an in-memory copy. On
    resume, lines of iterations at or after the resume point (written before a crash) are dropped.
    """

    def __init__(self, store: ObjectStore | None, key: str, period: int = 20):
        self.store, self.key, self.period = store, key, max(1, period)
        self.lines: list[str] = []
        self._dirty = False

    def before_train(self, trainer) -> None:
        if self.store is None or not dist.is_main_process():
            return
        try:
            old = self.store.get_bytes(self.key).decode().splitlines()
        except ObjectNotFound:
            old = []
        for line in old:
            try:
                if int(json.loads(line).get("iteration", -1)) < trainer.start_iter:
                    self.lines.append(line)
            except (ValueError, AttributeError):
                continue

    def write(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self.lines.append(json.dumps(clean, sort_keys=True))
        self._dirty = True

    def flush(self) -> None:
        if self.store is not None and self._dirty and dist.is_main_process():
            self.store.put_bytes(self.key, ("\n".join(self.lines) + "\n").encode(), "application/x-ndjson")
            self._dirty = False

    def after_step(self, trainer) -> None:
        if _due(trainer, self.period) or trainer.iter == trainer.start_iter:
            metrics = dist.reduce_mean_dict(trainer.step_metrics)
            trainer.latest_losses = {k: v for k, v in metrics.items() if k.startswith("loss") or k == "total_loss"}
            if dist.is_main_process():
                self.write({"iteration": trainer.iter, "time": round(time.time(), 3), **metrics})
        if trainer.new_eval is not None:
            if dist.is_main_process():
                self.write({"iteration": trainer.iter, "time": round(time.time(), 3),
                            **{f"eval/{k}": v for k, v in trainer.new_eval.items()}})
            trainer.new_eval = None
        if _due(trainer, self.period):
            self.flush()

    def after_train(self, trainer) -> None:
        self.flush()


class ProgressHook(HookBase):
    """Calls `callback(trainer, final)` every `period` steps on the main process; the callback returns True
    to cancel. The decision is broadcast so every process stops at the same iteration."""

    def __init__(self, callback, period: int = 10):
        self.callback, self.period = callback, max(1, period)

    def before_train(self, trainer) -> None:
        if dist.is_main_process():
            self.callback(trainer, False)

    def after_step(self, trainer) -> None:
        if not _due(trainer, self.period):
            return
        stop = bool(self.callback(trainer, False)) if dist.is_main_process() else False
        if dist.broadcast_object(stop):
            raise TrainingCancelled(f"cancelled at iteration {trainer.iter + 1}")

    def after_train(self, trainer) -> None:
        if dist.is_main_process():
            self.callback(trainer, True)
