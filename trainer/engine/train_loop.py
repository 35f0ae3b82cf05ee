"""The training loop: FC-CLIP (+ SRA) on mixed real and synthetic batches, AdamW with warmup + poly,
AMP on GPU, gradient clipping, DDP across processes, hooks for checkpoints/evaluation/metrics.

One `Trainer` per process. Order of construction matters for exact resumes: the vocabulary is set before
the checkpoint loads (the model's class-sized buffers depend on it), and the RNG states of a resumed
checkpoint are restored after the data iterator exists (creating it draws from the torch RNG).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext

import torch
from torch import nn

from dreammask.shared.storage import ObjectStore

from .. import distributed as dist
from ..data.build import Vocabulary, build_train_data, load_training_dicts
from ..evaluation.evaluator import summary
from .checkpoint import Checkpointer, set_rng_state
from .evaluate import evaluate_datasets, restoring_training_vocabulary, set_vocabulary, trained_novel_of
from .hooks import (
    EvalHook,
    HookBase,
    JSONMetricsWriter,
    PeriodicCheckpointer,
    ProgressHook,
    TrainingCancelled,
)
from .optim import build_lr_scheduler, build_optimizer
from .runtime import resolve_device, seed_everything

log = logging.getLogger("dreammask.trainer")


class PendingMetrics:
    """A step's logged values still on the device (names, one stacked tensor) plus host-side numbers."""

    def __init__(self, names: list[str], values: torch.Tensor, iteration: int):
        self.names, self.values, self.iteration = names, values, iteration
        self.host: dict[str, float] = {}

    def to_host(self) -> dict[str, float]:
        metrics = dict(zip(self.names, self.values.cpu().tolist()))
        if not math.isfinite(metrics["total_loss"]):
            raise FloatingPointError(
                f"loss became {metrics['total_loss']} at iteration {self.iteration}: {metrics}; "
                "lower SOLVER.BASE_LR or enable SOLVER.CLIP_GRADIENTS"
            )
        metrics.update(self.host)
        return metrics


class Trainer:
    def __init__(self, cfg, store: ObjectStore | None, prefix: str, model: nn.Module | None = None,
                 progress_callback=None, resume: bool = True):
        self.cfg = cfg
        self.store, self.prefix = store, prefix
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.seed = seed_everything(int(cfg.get("SEED", 0)), self.rank)
        self.weights_report: dict | None = None
        self.device = resolve_device(cfg)

        real, synthetic, vocab = load_training_dicts(cfg)
        self.vocabulary: Vocabulary = vocab
        if model is None:
            from dreammask.trainer.modeling import build_model

            model = build_model(cfg)
        model.to(self.device)
        set_vocabulary(model, vocab.names, [True] * len(vocab.names), vocab.isthing, vocab.synonyms)
        model.train()
        self.model = model
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.amp = bool(cfg.SOLVER.AMP.ENABLED) and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if str(cfg.SOLVER.AMP_DTYPE) == "bfloat16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        clip = cfg.SOLVER.CLIP_GRADIENTS
        self.clip_value, self.clip_norm_type = float(clip.CLIP_VALUE), float(clip.NORM_TYPE)
        self.clip = bool(clip.ENABLED) and self.clip_value > 0
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]

        self.checkpointer = (
            Checkpointer(store, prefix, int(cfg.SOLVER.MAX_TO_KEEP), bool(cfg.ENGINE.CHECKPOINT_FROZEN))
            if store is not None else None
        )
        self.start_iter, self._pending_rng = 0, None
        if resume and self.checkpointer is not None:
            self.start_iter = self._resume_or_load()
        elif cfg.MODEL.WEIGHTS:
            self._load_fcclip_weights()
        self.max_iter = int(cfg.SOLVER.MAX_ITER)
        self.iter = self.start_iter - 1
        self.cancelled = False

        self.data = build_train_data(cfg, self.rank, self.world_size, start_iter=self.start_iter)
        if dist.is_dist() and self.world_size > 1:
            # Buffers are not broadcast from rank 0: the model all-gathers real features into every rank's
            # SRA memory bank itself, and broadcasting the bank each step would only cost bandwidth.
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False, find_unused_parameters=bool(cfg.ENGINE.get("FIND_UNUSED_PARAMETERS", False)),
            )
        self._step_metrics: dict[str, float] = {}
        self._pending_metrics: PendingMetrics | None = None
        self.latest_losses: dict[str, float] = {}
        self.latest_eval: dict[str, dict] = {}
        self.new_eval: dict | None = None
        self.last_checkpoint: str | None = None
        self.hooks: list[HookBase] = self._default_hooks(progress_callback)

    @property
    def step_metrics(self) -> dict[str, float]:
        """The last step's losses and timings as floats: the one device-to-host copy happens here, when a
        hook asks (logging, status), not in every step. A non-finite loss is reported at that point."""
        if self._pending_metrics is not None:
            pending, self._pending_metrics = self._pending_metrics, None
            self._step_metrics = pending.to_host()
        return self._step_metrics

    # ---------------------------------------------------------------- set-up
    def _resume_or_load(self) -> int:
        key = self.checkpointer.last_checkpoint()
        if key is None:
            if self.cfg.MODEL.WEIGHTS:
                self._load_fcclip_weights()
            return 0
        payload = self.checkpointer.load(key)
        it = self.checkpointer.restore(payload, self.model, self.optimizer, self.scheduler, self.scaler)
        self._pending_rng = payload.get("rng")
        log.info("resumed from %s at iteration %d", key, it)
        return it

    def _load_fcclip_weights(self) -> None:
        from .fcclip_weights import load_fcclip_weights

        self.weights_report = load_fcclip_weights(self.model, self.cfg.MODEL.WEIGHTS)
        log.info("FC-CLIP weights: %s", self.weights_report["summary"])

    def _default_hooks(self, progress_callback) -> list[HookBase]:
        cfg = self.cfg
        hooks: list[HookBase] = []
        if self.checkpointer is not None:
            hooks.append(PeriodicCheckpointer(int(cfg.SOLVER.CHECKPOINT_PERIOD)))
        if list(cfg.DATASETS.TEST) and int(cfg.TEST.EVAL_PERIOD) > 0:
            hooks.append(EvalHook(int(cfg.TEST.EVAL_PERIOD)))
        self.metrics_writer = JSONMetricsWriter(self.store, self.prefix + "metrics.jsonl", int(cfg.ENGINE.LOG_PERIOD))
        hooks.append(self.metrics_writer)
        if progress_callback is not None:
            hooks.append(ProgressHook(progress_callback, int(cfg.ENGINE.STATUS_PERIOD)))
        return hooks

    # ---------------------------------------------------------------- loop
    def autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def run_step(self, batch: list[dict]) -> dict[str, float]:
        with self.autocast():
            losses = self.model(batch)
        if not isinstance(losses, dict) or not losses:
            raise TypeError("the model returned no loss dict in training mode")
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        grad_norm = None
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_value, self.clip_norm_type)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        # No host sync here: the values stay on the device, stacked, and are copied to the host in one go
        # only when a hook reads `step_metrics` (every ENGINE.LOG_PERIOD / STATUS_PERIOD steps).
        names = list(losses) + ["total_loss"] + (["grad_norm"] if grad_norm is not None else [])
        values = [v.detach().float().reshape(()) for v in losses.values()] + [total.detach().float().reshape(())]
        if grad_norm is not None:
            values.append(grad_norm.detach().float().reshape(()))
        return PendingMetrics(names, torch.stack(values), self.iter)

    def train(self) -> dict:
        start = time.perf_counter()
        for h in self.hooks:
            h.before_train(self)
        data_iter = iter(self.data.loader)
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        error = None
        try:
            for it in range(self.start_iter, self.max_iter):
                self.iter = it
                t0 = time.perf_counter()
                batch = next(data_iter)
                t1 = time.perf_counter()
                metrics = self.run_step(batch)
                t2 = time.perf_counter()
                # step_time is host time: kernels still in flight run into the next step's (no sync here).
                metrics.host.update(data_time=t1 - t0, step_time=t2 - t1, lr=self.optimizer.param_groups[0]["lr"])
                self._pending_metrics = metrics
                for h in self.hooks:
                    h.after_step(self)
        except TrainingCancelled:
            self.cancelled = True
        except BaseException as e:
            error = e
            raise
        finally:
            if error is None:
                for h in self.hooks:
                    h.after_train(self)
            else:
                self.metrics_writer.flush()
        return self.summary(time.perf_counter() - start)

    def summary(self, seconds: float) -> dict:
        return {
            "iteration": self.iter + 1,
            "max_iter": self.max_iter,
            "cancelled": self.cancelled,
            "losses": dict(self.latest_losses),
            "eval": dict(self.latest_eval),
            "checkpoint": self.last_checkpoint,
            "seconds": round(seconds, 3),
            "vocabulary": len(self.vocabulary.names),
            "real_images": self.data.num_real,
            "synthetic_images": self.data.num_synthetic,
            "synthetic_per_batch": self.data.sampler.synthetic_per_batch,
            "weights_report": _report_for_record(self.weights_report),
            # A cheap fingerprint of the trained weights (processes of one DDP run must agree on it).
            "params_checksum": float(sum(p.detach().double().sum() for p in self.params)),
            "rank": self.rank,
            "world_size": self.world_size,
        }

    # ---------------------------------------------------------------- checkpoints / evaluation
    def save_checkpoint(self, next_iter: int) -> None:
        if self.checkpointer is None:
            return
        if dist.is_main_process():
            self.last_checkpoint = self.checkpointer.save(
                next_iter, self.model, self.optimizer, self.scheduler, self.scaler,
                extra={"vocabulary": self.vocabulary.to_json()},
            )
        dist.synchronize()

    def run_evaluation(self, final: bool = False) -> dict[str, dict]:
        """Evaluate on every DATASETS.TEST entry (engine/evaluate.py, the same function as an evaluation-only
        run); the training vocabulary and buffers are restored after."""
        cfg = self.cfg
        with restoring_training_vocabulary(self.model, self.vocabulary) as model:
            results = evaluate_datasets(model, cfg, self.vocabulary.seen_reference, trained_novel_of(self.vocabulary),
                                        self.rank, self.world_size, 0 if final else int(cfg.TEST.EVAL_MAX_IMAGES))
        self.latest_eval = {"iteration": self.iter + 1, **results}
        self.new_eval = {f"{ds}/{k}": v for ds, r in results.items() for k, v in summary(r).items()}
        return results


def _report_for_record(report: dict | None) -> dict | None:
    from .fcclip_weights import report_for_record

    return report_for_record(report)
