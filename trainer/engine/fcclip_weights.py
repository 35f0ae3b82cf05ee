"""Start from released FC-CLIP weights: map their detectron2 parameter names and shapes onto this model
and report what did not map.

FC-CLIP's checkpoints (detectron2 `.pth`, or `.pkl` with numpy arrays) name the heads
`sem_seg_head.pixel_decoder.*` and `sem_seg_head.predictor.*`, the deformable encoder layers
`transformer.encoder.layers.*`, and Mask2Former's FPN convs `adapter_{i}` / `layer_{i}` (a bias-free conv
with a `.norm`). This model names them `pixel_decoder.*`, `predictor.*`, `transformer.layers.*` and
`lateral_convs.{i-1}.{0,1}` / `output_convs.{i-1}.{0,1}`; the CLIP backbone (`backbone.clip_model.*`) and
`void_embedding` carry the same names. A tensor loads when its mapped name exists with the same shape;
everything else is listed in the report (missing, unused, shape mismatches).
"""

from __future__ import annotations

import io
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from .checkpoint import unwrap

log = logging.getLogger("dreammask.trainer")

RENAME_RULES: list[tuple[str, str]] = [
    (r"^module\.", ""),
    (r"^sem_seg_head\.", ""),
    (r"^pixel_decoder\.transformer\.encoder\.layers\.", "pixel_decoder.transformer.layers."),
    (r"^pixel_decoder\.adapter_(\d+)\.norm\.", "pixel_decoder.lateral_convs.{0}.1."),
    (r"^pixel_decoder\.adapter_(\d+)\.", "pixel_decoder.lateral_convs.{0}.0."),
    (r"^pixel_decoder\.layer_(\d+)\.norm\.", "pixel_decoder.output_convs.{0}.1."),
    (r"^pixel_decoder\.layer_(\d+)\.", "pixel_decoder.output_convs.{0}.0."),
]


# Buffers FC-CLIP saves that this model recomputes instead of loading: Mask2Former's SetCriterion keeps the
# class weights of its cross-entropy (1 per class, NO_OBJECT_WEIGHT for void) as a persistent buffer; this
# model builds them from the config and the vocabulary it is given, so a checkpoint's copy is not loaded.
DERIVED_BUFFERS = ("criterion.empty_weight",)


def map_name(name: str) -> str:
    for pattern, repl in RENAME_RULES:
        m = re.match(pattern, name)
        if m:
            if "{0}" in repl:
                repl = repl.format(int(m.group(1)) - 1)
            name = repl + name[m.end():]
    return name


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """detectron2 `.pkl` weights are dicts of numpy arrays; nothing else may be constructed."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameter dict of a FC-CLIP / detectron2 checkpoint (.pth, .pt or .pkl); no code is run."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(parameters, extra): a FC-CLIP / detectron2 checkpoint's parameters, or one of this trainer's with the
    `extra` it saved (the training vocabulary); no code is run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MODEL.WEIGHTS {path} not found; give the path of the FC-CLIP checkpoint")
    data = path.read_bytes()
    if path.suffix == ".pkl":
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    else:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    extra = obj.get("extra", {}) if isinstance(obj, dict) and isinstance(obj.get("extra"), dict) else {}
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a checkpoint (expected a dict of tensors, got {type(obj).__name__})")
    out = {}
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, torch.Tensor):
            out[str(k)] = v
    return out, extra


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(tensors to load under this model's names, report)."""
    mapped, unused, mismatched, derived = {}, [], [], []
    for name, tensor in source.items():
        if name in DERIVED_BUFFERS or name.removeprefix("module.") in DERIVED_BUFFERS:
            derived.append(name)
            continue
        new = map_name(name)
        if new not in target:
            unused.append(name)
        elif tuple(target[new].shape) != tuple(tensor.shape):
            mismatched.append({"source": name, "target": new, "source_shape": list(tensor.shape),
                               "target_shape": list(target[new].shape)})
        else:
            mapped[new] = tensor.to(target[new].dtype)
    missing = sorted(k for k in target if k not in mapped)
    report = {
        "loaded": len(mapped),
        "target_tensors": len(target),
        "missing": missing,
        "unused": sorted(unused),
        "shape_mismatch": mismatched,
        "derived_buffers": sorted(derived),
    }
    report["summary"] = (
        f"loaded {len(mapped)} of {len(target)} tensors; {len(missing)} missing, {len(unused)} unused, "
        f"{len(mismatched)} with other shapes"
    )
    return mapped, report


def load_fcclip_weights(model: torch.nn.Module, path: str | Path) -> dict:
    """Load what maps; returns the report (also logged, with the first names of each list)."""
    model = unwrap(model)
    target = model.state_dict()
    source, extra = read_checkpoint(path)
    mapped, report = map_state_dict(source, target)
    report["extra"] = extra
    if not mapped:
        raise ValueError(f"{path}: no tensor maps onto this model ({report['summary']}); is it an FC-CLIP checkpoint?")
    model.load_state_dict(mapped, strict=False)
    for what in ("missing", "unused"):
        if report[what]:
            log.warning("FC-CLIP weights %s: %d, e.g. %s", what, len(report[what]), report[what][:5])
    for m in report["shape_mismatch"][:5]:
        log.warning("FC-CLIP weights shape mismatch: %s", m)
    return report
