"""Start from (or evaluate) released FC-CLIP weights: read detectron2's checkpoint files, map FC-CLIP's
parameter names onto this model, and report by name what did not map.

detectron2's files: its Checkpointer writes a `.pth` with `torch.save({"model": state_dict, ...})`; model
zoo conversions are a `.pkl`, a pickled dict whose `model` holds numpy arrays (with `__author__`,
`matching_heuristics`). Both are read without running code: `.pkl` with an unpickler that builds numpy
arrays only, `.pth` with `torch.load(weights_only=True)` (numpy arrays allowed, nothing else).

FC-CLIP's module names (fcclip/fcclip.py, fcclip/modeling/meta_arch/fcclip_head.py,
fcclip/modeling/pixel_decoder/msdeformattn.py, fcclip/modeling/transformer_decoder/
fcclip_transformer_decoder.py): the heads sit under `sem_seg_head.pixel_decoder.*` and
`sem_seg_head.predictor.*`; the deformable encoder's layers under `transformer.encoder.layers.*`; the FPN
convs are registered as `adapter_{k}` / `layer_{k}` (detectron2 Conv2d: a bias-free conv with a `.norm`),
k = 1.. in feature order (res2 first), while the forward pass walks them reversed (coarse to fine). This
model keeps them in that walking order, `lateral_convs.{n-k}.{0,1}` / `output_convs.{n-k}.{0,1}` for n FPN
levels (1 for ConvNeXt-L: strides 8 -> 4). `backbone.clip_model.*` (open_clip), `void_embedding` and the
predictor's own names are the same on both sides.
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

# Buffers FC-CLIP saves that this model recomputes instead of loading: Mask2Former's SetCriterion keeps the
# class weights of its cross-entropy (1 per class, NO_OBJECT_WEIGHT for void) as a persistent buffer; this
# model builds them from the config and the vocabulary it is given, so a checkpoint's copy is not loaded.
DERIVED_BUFFERS = ("criterion.empty_weight",)

_FPN = re.compile(r"^pixel_decoder\.(adapter|layer)_(\d+)\.(norm\.)?")
_OURS_FPN = re.compile(r"^pixel_decoder\.(lateral|output)_convs\.(\d+)\.([01])\.")


def map_name(name: str, fpn_levels: int = 1) -> str:
    """FC-CLIP's (detectron2's) parameter name -> this model's."""
    name = name.removeprefix("module.").removeprefix("sem_seg_head.")
    if name.startswith("pixel_decoder.transformer.encoder.layers."):
        return name.replace("pixel_decoder.transformer.encoder.layers.", "pixel_decoder.transformer.layers.", 1)
    m = _FPN.match(name)
    if m:
        kind, k, norm = m.group(1), int(m.group(2)), m.group(3)
        ours = "lateral_convs" if kind == "adapter" else "output_convs"
        return f"pixel_decoder.{ours}.{fpn_levels - k}.{1 if norm else 0}." + name[m.end():]
    return name


def fcclip_name(name: str, fpn_levels: int = 1) -> str:
    """This model's parameter name -> FC-CLIP's, as its released checkpoints spell it."""
    if name.startswith("pixel_decoder.transformer.layers."):
        name = name.replace("pixel_decoder.transformer.layers.", "pixel_decoder.transformer.encoder.layers.", 1)
    m = _OURS_FPN.match(name)
    if m:
        kind = "adapter" if m.group(1) == "lateral" else "layer"
        k = fpn_levels - int(m.group(2))
        name = f"pixel_decoder.{kind}_{k}." + ("norm." if m.group(3) == "1" else "") + name[m.end():]
    if name.startswith(("pixel_decoder.", "predictor.")):
        name = "sem_seg_head." + name
    return name


def fpn_levels_of(state: dict) -> int:
    """How many FPN levels a state dict of this model has (its `lateral_convs` entries)."""
    return len({m.group(2) for m in map(_OURS_FPN.match, state) if m}) or 1


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What a protocol-2 pickle written by Python 3 calls to rebuild `bytes` (`_codecs.encode(s, "latin1")`),
    limited to that one codec so a weights file cannot reach any other."""
    if encoding.lower().replace("-", "").replace("_", "") != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with codec {encoding!r} in a weights file")
    return text.encode("latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """detectron2 `.pkl` weights are dicts of numpy arrays; nothing else may be constructed.

    What a numpy array pickles to depends on the protocol: 2 to 4 call `multiarray._reconstruct` (and
    protocol 2 from Python 3 rebuilds its bytes with `_codecs.encode`), 5 calls `numeric._frombuffer` on an
    in-band buffer; numpy 2 spells the modules `numpy._core`, numpy 1 `numpy.core`."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")


def _numpy_safe_globals() -> list:
    """What torch's weights_only loader must also accept for a `.pth` whose `model` holds numpy arrays."""
    multiarray = getattr(np, "_core", None) or np.core
    out = [np.ndarray, np.dtype, multiarray.multiarray._reconstruct, multiarray.multiarray.scalar]
    out += [type(np.dtype(t)) for t in ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")]
    return out


def _load(path: Path, data: bytes):
    if path.suffix == ".pkl":
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameter dict of a FC-CLIP / detectron2 checkpoint (.pth, .pt or .pkl); no code is run."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(parameters, extra): a FC-CLIP / detectron2 checkpoint's parameters, or one of this trainer's with the
    `extra` it saved (the training vocabulary); no code is run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MODEL.WEIGHTS {path} not found; give the path of the FC-CLIP checkpoint")
    obj = _load(path, path.read_bytes())
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
            # np.array, not np.ascontiguousarray: that one turns a 0-d array (logit_scale) into shape (1,)
            v = torch.from_numpy(np.array(v, order="C", copy=True))
        if isinstance(v, torch.Tensor):
            out[str(k)] = v
    return out, extra


def map_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(tensors to load under this model's names, report). The report names every tensor that did not
    load: `missing` (this model's, left as built), `unused` (the checkpoint's, mapped to nothing here),
    `shape_mismatch`, and `derived_buffers` (saved by FC-CLIP, recomputed here)."""
    levels = fpn_levels_of(target)
    mapped, unused, mismatched, derived = {}, [], [], []
    for name, tensor in source.items():
        if name.removeprefix("module.") in DERIVED_BUFFERS:
            derived.append(name)
            continue
        new = map_name(name, levels)
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


REPORT_KEYS = ("summary", "loaded", "target_tensors", "missing", "unused", "shape_mismatch", "derived_buffers")


def report_for_record(report: dict | None) -> dict | None:
    """The weights report as a training's result and an evaluation's JSON carry it: every name of what did not
    load (the log shows the first 50), without the checkpoint's `extra`."""
    return None if report is None else {k: report[k] for k in REPORT_KEYS if k in report}


def load_fcclip_weights(model: torch.nn.Module, path: str | Path) -> dict:
    """Load what maps; returns the report (also logged, naming what did not map) and the file's `extra`."""
    model = unwrap(model)
    target = model.state_dict()
    source, extra = read_checkpoint(path)
    mapped, report = map_state_dict(source, target)
    report["extra"] = extra
    if not mapped:
        raise ValueError(f"{path}: no tensor maps onto this model ({report['summary']}); is it an FC-CLIP checkpoint?")
    model.load_state_dict(mapped, strict=False)
    log.info("weights %s: %s", path, report["summary"])
    for what in ("missing", "unused"):
        if report[what]:
            names = report[what]
            log.warning("weights %s (%d): %s%s", what, len(names), ", ".join(names[:50]),
                        " ..." if len(names) > 50 else "")
    for m in report["shape_mismatch"]:
        log.warning("weights shape mismatch: %s", m)
    return report
