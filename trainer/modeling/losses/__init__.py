"""The criterion's losses, declared once. `LossDef` is the one contract of a loss: its name, its function,
the keys it returns, the weight of each key in the objective, whether the auxiliary decoder layers get it
too, and the config switch that turns it on.

Everything else is derived from the declarations: the losses the model builds its criterion with and its
`weight_dict` (`FCCLIP`, trainer/modeling/meta_arch.py), what the criterion computes per decoder layer
(`SetCriterion`, trainer/modeling/criterion.py), hence the weighted losses the model returns, their sum the
trainer steps on, and the losses it logs. A loss module holds only its function.

How to add a loss: docs/extending.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Weight = str | float  # a config key ("MODEL.MASK_FORMER.CLASS_WEIGHT") or the weight itself


@dataclass(frozen=True)
class LossDef:
    """One loss of the criterion.

    `function` ("module:function", or the callable) is `(criterion, outputs, targets, indices, num_masks)
    -> tensor`, or a tuple of tensors, one per key of `keys`, in that order; it returns them unweighted and
    reads what it needs from the criterion (`eos_coef`, `num_points`, `iat`, ...). `weights` gives each key
    its weight in the objective: a config key, read from the model's config, or a number. `on_aux_layers`:
    the earlier decoder layers get the loss too (keys `<key>_<i>`, with the key's weight) when
    MODEL.MASK_FORMER.DEEP_SUPERVISION is on. `enabled_by` names a boolean config key that turns the loss on
    (None: always on). `needs` names the criterion's attributes it uses that are not always there (`iat`)."""

    name: str
    function: str | Callable[..., Any]
    keys: tuple[str, ...]
    weights: tuple[Weight, ...]
    on_aux_layers: bool = True
    enabled_by: str | None = None
    needs: tuple[str, ...] = ()
    _fn: list = field(default_factory=list, init=False, repr=False, compare=False)  # the function, once resolved

    def __post_init__(self):
        if len(self.weights) != len(self.keys):
            raise ValueError(f"loss {self.name!r}: one weight per key of {self.keys}, got {len(self.weights)}")
        if not self.keys or any(not k.startswith("loss_") for k in self.keys):
            raise ValueError(f"loss {self.name!r}: its keys must start with 'loss_' (the trainer logs those), "
                             f"got {self.keys}")
        if isinstance(self.function, str) and not all(self.function.partition(":")[::2]):
            raise ValueError(f"loss {self.name!r}: function {self.function!r} must be 'module:function'")

    @property
    def fn(self) -> Callable[..., Any]:
        """The function, imported on first use."""
        if not callable(self.function):
            if not self._fn:
                module, _, attr = self.function.partition(":")
                try:
                    self._fn.append(getattr(importlib.import_module(module), attr))
                except (ImportError, AttributeError) as e:
                    raise ValueError(f"loss {self.name!r}: function {self.function!r} cannot be imported: {e}") from e
            return self._fn[0]
        return self.function

    def __call__(self, criterion, outputs, targets, indices, num_masks, suffix: str = "") -> dict[str, torch.Tensor]:
        value = self.fn(criterion, outputs, targets, indices, num_masks)
        values = value if isinstance(value, tuple) else (value,)
        return {f"{k}{suffix}": v for k, v in zip(self.keys, values, strict=True)}

    def enabled(self, cfg) -> bool:
        return self.enabled_by is None or bool(cfg_value(cfg, self.enabled_by, self.name))

    def weight_dict(self, cfg) -> dict[str, float]:
        return {k: float(cfg_value(cfg, w, self.name) if isinstance(w, str) else w)
                for k, w in zip(self.keys, self.weights, strict=True)}


_M = "dreammask.trainer.modeling.losses"

# The losses, in the order the criterion computes them (the order of the logged keys).
LOSSES: tuple[LossDef, ...] = (
    LossDef("labels", f"{_M}.segmentation:labels", ("loss_ce",), ("MODEL.MASK_FORMER.CLASS_WEIGHT",)),
    LossDef("masks", f"{_M}.segmentation:masks", ("loss_mask", "loss_dice"),
            ("MODEL.MASK_FORMER.MASK_WEIGHT", "MODEL.MASK_FORMER.DICE_WEIGHT")),
    # λ enters through the weight only: the function's L_sra is unweighted (docs/training_model.md).
    LossDef("sra", f"{_M}.sra:sra", ("loss_sra",), ("MODEL.DREAMMASK.LAMBDA_SRA",), on_aux_layers=False,
            enabled_by="MODEL.DREAMMASK.ENABLED", needs=("iat",)),
)


def loss_def(name: str) -> LossDef:
    for d in LOSSES:
        if d.name == name:
            return d
    raise ValueError(f"unknown loss {name!r}; known: {sorted(d.name for d in LOSSES)}")


def enabled_losses(cfg) -> tuple[LossDef, ...]:
    """The declared losses the config turns on, in declaration order."""
    names = [d.name for d in LOSSES]
    if len(set(names)) != len(names):
        raise ValueError(f"a loss name is declared twice in LOSSES: {names}")
    return tuple(d for d in LOSSES if d.enabled(cfg))


def build_weight_dict(cfg, losses: tuple[LossDef, ...], aux_layers: int) -> dict[str, float]:
    """Each returned key's weight, with one copy per auxiliary layer (`<key>_<i>`) for the losses computed
    there. A key the criterion returns without a weight here is not part of the objective."""
    out: dict[str, float] = {}
    for d in losses:
        out.update(d.weight_dict(cfg))
    for i in range(aux_layers):
        for d in losses:
            if d.on_aux_layers:
                out.update({f"{k}_{i}": w for k, w in d.weight_dict(cfg).items()})
    clash = [k for d in losses for k in d.keys if sum(k in e.keys for e in losses) > 1]
    if clash:
        raise ValueError(f"two losses return the same key(s) {sorted(set(clash))}")
    return out


def cfg_value(cfg, key: str, loss: str) -> Any:
    """The value of a dotted config key, or an error naming the loss that asked for it."""
    node = cfg
    for part in key.split("."):
        if not hasattr(node, part):
            raise ValueError(f"loss {loss!r}: the config has no key {key!r} (add it to trainer/config/defaults.py, "
                             "or give the weight as a number)")
        node = getattr(node, part)
    return node
