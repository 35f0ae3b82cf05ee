"""AdamW over the trainable parameters, and the learning-rate schedule: detectron2's WarmupMultiStepLR
(FC-CLIP's recipe: x0.1 at SOLVER.STEPS = 327778 and 355092 of 368750) or warmup + poly (WarmupPolyLR).

Norm layers and embeddings (query embeddings, positional embeddings) take their own weight decay
(SOLVER.WEIGHT_DECAY_NORM / _EMBED, 0 by default as in Mask2Former); parameters under a "backbone" module
that are trainable get SOLVER.BACKBONE_MULTIPLIER times the learning rate.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

log = logging.getLogger("dreammask.trainer")

_NORM_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    if hasattr(model, "trainable_parameters"):
        return [p for p in model.trainable_parameters() if p.requires_grad]
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model: nn.Module, base_lr: float, weight_decay: float, weight_decay_norm: float,
                 weight_decay_embed: float, backbone_multiplier: float) -> list[dict]:
    trainable = {id(p) for p in _trainable(model)}
    seen: set[int] = set()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) not in trainable or id(p) in seen:
                continue
            seen.add(id(p))
            lr, wd = base_lr, weight_decay
            full = f"{module_name}.{pname}" if module_name else pname
            if "backbone" in full.split("."):
                lr = base_lr * backbone_multiplier
            if isinstance(module, _NORM_TYPES):
                wd = weight_decay_norm
            elif isinstance(module, nn.Embedding) or "relative_position_bias_table" in pname \
                    or "absolute_pos_embed" in pname or "query_embed" in full or "query_feat" in full:
                wd = weight_decay_embed
            groups.setdefault((lr, wd), []).append(p)
    missing = trainable - seen
    if missing:
        raise RuntimeError(f"{len(missing)} trainable parameters are not registered under the model's modules")
    return [{"params": ps, "lr": lr, "weight_decay": wd, "initial_lr": lr} for (lr, wd), ps in groups.items()]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    s = cfg.SOLVER
    groups = param_groups(
        model, float(s.BASE_LR), float(s.WEIGHT_DECAY), float(s.WEIGHT_DECAY_NORM),
        float(s.WEIGHT_DECAY_EMBED), float(s.BACKBONE_MULTIPLIER),
    )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    # fused AdamW only where every parameter is on a GPU.
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=float(s.BASE_LR), weight_decay=float(s.WEIGHT_DECAY),
                             fused=fused or None)


def warmup_poly_factor(it: int, max_iter: int, warmup_iters: int, warmup_factor: float,
                       power: float, method: str = "linear") -> float:
    """LR multiplier at iteration `it`: warmup from warmup_factor to 1, times (1 - it/max_iter)^power."""
    if it < warmup_iters:
        alpha = it / warmup_iters
        if method == "linear":
            warm = warmup_factor * (1 - alpha) + alpha
        elif method == "constant":
            warm = warmup_factor
        else:
            raise ValueError(f"SOLVER.WARMUP_METHOD {method!r} is not one of 'linear', 'constant'")
    else:
        warm = 1.0
    return warm * math.pow(max(0.0, 1.0 - it / max(1, max_iter)), power)


def warmup_multistep_factor(it: int, steps: list[int], gamma: float, warmup_iters: int, warmup_factor: float,
                            method: str = "linear") -> float:
    """LR multiplier at iteration `it`: warmup, then gamma ** (number of steps <= it) (detectron2)."""
    warm = warmup_poly_factor(it, 1 << 62, warmup_iters, warmup_factor, 0.0, method)
    return warm * gamma ** sum(1 for s in steps if s <= it)


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    s = cfg.SOLVER
    max_iter, warmup, wf, power, method = (
        int(s.MAX_ITER), int(s.WARMUP_ITERS), float(s.WARMUP_FACTOR), float(s.POLY_LR_POWER), str(s.WARMUP_METHOD)
    )
    name = str(s.get("LR_SCHEDULER_NAME", "WarmupPolyLR"))
    warmup_poly_factor(0, max_iter, warmup, wf, power, method)  # validate now, not on the first step
    if name == "WarmupMultiStepLR":
        steps, gamma = sorted(int(x) for x in s.get("STEPS", ())), float(s.get("GAMMA", 0.1))
        if any(x > max_iter for x in steps):  # detectron2 warns and ignores them too (short runs)
            log.warning("SOLVER.STEPS %s beyond SOLVER.MAX_ITER %d are never reached", steps, max_iter)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: warmup_multistep_factor(it, steps, gamma, warmup, wf, method)
        )
    if name != "WarmupPolyLR":
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME {name!r} is not one of 'WarmupMultiStepLR', 'WarmupPolyLR'")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: warmup_poly_factor(it, max_iter, warmup, wf, power, method)
    )


def add_full_model_gradient_clipping(optimizer: torch.optim.Optimizer, max_norm: float,
                                     norm_type: float = 2.0) -> torch.optim.Optimizer:
    """Clip the gradient norm of all the optimizer's parameters together before every step (Mask2Former's
    and FC-CLIP's CLIP_TYPE "full_model"); for loops that only call optimizer.step(), e.g. detectron2's
    SimpleTrainer / AMPTrainer. Returns the same optimizer object, its class swapped for a clipping one;
    `last_grad_norm` is the norm the last clip measured.

    Under AMP the clip must see unscaled gradients. A fused optimizer (AdamW on GPUs) declares
    `_step_supports_amp_scaling`: GradScaler.step then hands it the loss-scaled gradients to unscale inside
    its kernel, after this clip has measured them, and detectron2's AMPTrainer never calls unscale_. The
    clipping optimizer declares it cannot, so GradScaler unscales first (and still skips steps with
    infinite gradients)."""
    if max_norm <= 0:
        return optimizer
    params = [p for g in optimizer.param_groups for p in g["params"]]
    base = type(optimizer)

    class FullModelGradientClipping(base):  # type: ignore[misc, valid-type]
        def step(self, closure=None):
            self.last_grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure)

    FullModelGradientClipping.__name__ = f"{base.__name__}WithFullModelClipping"
    optimizer.__class__ = FullModelGradientClipping
    optimizer._step_supports_amp_scaling = False
    return optimizer
