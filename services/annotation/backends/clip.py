"""CLIP scores for each mask: does the masked region look like the category the layout asked for?

Text side: each vocabulary name is put in every prompt template ("a photo of a {}."), encoded, the
template embeddings averaged and re-normalised (CLIP's prompt ensemble). The vocabulary's embeddings are
computed once and kept in an LRU cache keyed by the vocabulary tuple, so a job's scenes reuse them.

Image side, per instance, two crops of the same square region around the instance (its box and mask,
plus a margin), resized to CLIP's input size:
  * the *box crop*: the image as is (the object with its context);
  * the *masked crop*: pixels outside the mask replaced by CLIP's mean colour, which normalises to zero,
    so only the mask's content speaks.
The crops of all the images of a task go through the image encoder together (`score_many`). The instance embedding is the
re-normalised weighted mean ``w * masked + (1 - w) * box`` (``w = clip_mask_weight``, 0.5 by default):
the masked crop checks that the mask holds the object; the box crop steadies the score on thin or
small masks where the masked crop alone is mostly grey.

Scores: ``clip_cosine`` (cosine of the instance embedding to the target's text embedding),
``clip_prob`` (softmax over the vocabulary of the cosines times CLIP's logit scale, at the target),
``clip_rank`` (1 = the target is the best-matching name), plus ``clip_cosine_mask`` and
``clip_cosine_box`` of the two crops alone, for diagnosis.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from dreammask.shared.backends import ScoreBackend
from dreammask.shared.schemas import normalise_name

from ..settings import DEFAULT_PROMPT_TEMPLATES, AnnotationSettings, resolve_device

log = logging.getLogger(__name__)

CLIP_VOCAB_SIZE = 49408  # the BPE vocabulary every OpenAI/LAION CLIP text tower is trained with


def _tokenizer(context_length: int):
    """open_clip's shipped BPE tokenizer (a file inside the package: no network)."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=context_length)
    if len(tok.encoder) != CLIP_VOCAB_SIZE:
        raise RuntimeError(
            f"open_clip's BPE vocabulary has {len(tok.encoder)} tokens, expected {CLIP_VOCAB_SIZE}; "
            "the installed open_clip_torch is broken"
        )
    return tok


def load_clip(
    model_name: str,
    pretrained: Path | None,
    model_config: Path | None = None,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    allow_hub_downloads: bool = False,
):
    """Create the open_clip model from its config name and load the weights file; returns (model, tokenizer)."""
    import open_clip

    if model_config is not None:
        model_config = Path(model_config)
        if not model_config.is_file():
            raise FileNotFoundError(
                f"CLIP model config {model_config} not found; fix DREAMMASK_CLIP_MODEL_CONFIG or unset it"
            )
        if model_config.stem != model_name:
            raise ValueError(
                f"the CLIP model config file is named {model_config.stem!r} but DREAMMASK_CLIP_MODEL is "
                f"{model_name!r}; open_clip registers a config under its file name, so make them equal"
            )
        open_clip.add_model_config(model_config)
    if model_name.startswith("hf-hub:") and not allow_hub_downloads:
        raise ValueError(
            f"CLIP model {model_name!r} would be downloaded from the Hugging Face hub, and hub downloads are "
            "off; mount the weights and name a local model, or set DREAMMASK_ALLOW_HUB_DOWNLOADS=true"
        )
    if model_name.startswith("local-dir:"):
        pretrained = None  # the directory holds the weights
    else:
        if open_clip.get_model_config(model_name) is None:
            raise ValueError(
                f"unknown CLIP model config {model_name!r}; use an open_clip name (e.g. ViT-L-14) or give "
                "DREAMMASK_CLIP_MODEL_CONFIG"
            )
        if pretrained is None or not Path(pretrained).is_file():
            raise FileNotFoundError(
                f"CLIP weights {pretrained} not found: mount an open_clip checkpoint of {model_name} under the "
                "models directory and point DREAMMASK_CLIP_PRETRAINED at it"
            )
        text_cfg = open_clip.get_model_config(model_name).get("text_cfg", {})
        if text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"):
            raise ValueError(
                f"CLIP model {model_name!r} uses a Hugging Face text tower/tokenizer; this backend supports "
                "CLIP-BPE text towers (OpenAI/LAION ViT and ConvNeXt CLIP models)"
            )
    try:
        model = open_clip.create_model(
            model_name,
            pretrained=str(pretrained) if pretrained is not None else None,
            precision=precision,
            device=device,
            pretrained_text=False,  # never fetch a default text tower
            require_pretrained=True,
            weights_only=True,
        )
    except (RuntimeError, AssertionError, KeyError) as e:
        # open_clip reports a checkpoint of another architecture as any of these
        raise ValueError(
            f"cannot load CLIP {model_name} from {pretrained}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
            " (is the weights file of this model config?)"
        ) from None
    model.eval()
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None and vocab != CLIP_VOCAB_SIZE:
        raise ValueError(f"CLIP model {model_name!r} has a {vocab}-token text vocabulary; expected {CLIP_VOCAB_SIZE}")
    return model, _tokenizer(int(getattr(model, "context_length", 77)))


def _square_region(box, mask_box, margin: float) -> tuple[int, int, int]:
    """(x0, y0, side): a square around the union of the prompt box and the mask's box, plus a margin."""
    x0, y0, x1, y1 = box
    if mask_box is not None:
        x0, y0 = min(x0, mask_box[0]), min(y0, mask_box[1])
        x1, y1 = max(x1, mask_box[2]), max(y1, mask_box[3])
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    side_i = max(int(round(side)), 2)
    return int(round(cx - side_i / 2.0)), int(round(cy - side_i / 2.0)), side_i


def _window(src: np.ndarray, x0: int, y0: int, side: int, fill) -> np.ndarray:
    """The (side, side) window of `src` at (x0, y0), parts outside the image taking `fill`: a view when the
    window lies inside the image (OpenCV reads it in place), else one padded copy."""
    import cv2

    h, w = src.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if (sx0, sy0, sx1, sy1) == (x0, y0, x0 + side, y0 + side):
        return src[y0 : y0 + side, x0 : x0 + side]
    if sx1 <= sx0 or sy1 <= sy0:
        out = np.empty((side, side) + src.shape[2:], dtype=src.dtype)
        out[...] = fill
        return out
    value = [int(v) for v in np.atleast_1d(fill)]
    return cv2.copyMakeBorder(src[sy0:sy1, sx0:sx1], sy0 - y0, y0 + side - sy1, sx0 - x0, x0 + side - sx1,
                              cv2.BORDER_CONSTANT, value=value + [0] * (4 - len(value)))


def _masked(crop: np.ndarray, keep: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """The crop where `keep` (uint8, non-zero inside) is set and `fill` elsewhere. OpenCV's masked copy
    runs per plane: on interleaved RGB it is several times slower than on the three planes."""
    import cv2

    planes = []
    for plane, value in zip(cv2.split(crop), fill, strict=True):
        out = np.full(keep.shape, value, dtype=np.uint8)
        cv2.copyTo(plane, keep, out)
        planes.append(out)
    return cv2.merge(planes)


def instance_crops(
    image: np.ndarray, masks: list[np.ndarray], boxes: np.ndarray, size: int, margin: float, mean_rgb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Box crops and masked crops, each (N, size, size, 3) uint8."""
    import cv2

    fill = np.asarray(mean_rgb, dtype=np.uint8)
    box_crops = np.empty((len(masks), size, size, 3), dtype=np.uint8)
    masked_crops = np.empty_like(box_crops)
    for i, (mask, box) in enumerate(zip(masks, boxes, strict=True)):
        mask = np.asarray(mask, dtype=bool)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        mask_box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) if rows.size else None
        x0, y0, side = _square_region(box, mask_box, margin)
        crop = _window(image, x0, y0, side, fill)
        keep = _window(mask.view(np.uint8), x0, y0, side, np.uint8(0))
        interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
        cv2.resize(crop, (size, size), dst=box_crops[i], interpolation=interp)
        cv2.resize(_masked(crop, keep, fill), (size, size), dst=masked_crops[i], interpolation=interp)
    return box_crops, masked_crops


def _input_dtype(visual):
    """The dtype the image tower expects: that of its first convolution (open_clip's fp16 mode converts
    convolutions and linear layers but leaves embeddings and norms in fp32)."""
    import torch

    for module in visual.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module.weight.dtype
    return next(visual.parameters()).dtype


class ClipScores(ScoreBackend):
    name = "clip"
    requires_gpu = True  # runs on the CPU too
    requires_weights = True

    def __init__(
        self,
        model,
        tokenizer,
        *,
        device: str = "cpu",
        templates: list[str] | None = None,
        mask_weight: float = 0.5,
        crop_margin: float = 0.1,
        batch_size: int = 64,
        text_batch_size: int = 256,
        text_cache_size: int = 8,
        info: dict[str, Any] | None = None,
    ):
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = _input_dtype(model.visual)
        self.templates = list(templates or DEFAULT_PROMPT_TEMPLATES)
        self.mask_weight = float(mask_weight)
        self.crop_margin = float(crop_margin)
        self.batch_size = int(batch_size)
        self.text_batch_size = int(text_batch_size)
        self.text_cache_size = int(text_cache_size)
        self.info = dict(info or {})
        cfg = getattr(model.visual, "preprocess_cfg", None) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = np.asarray(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=np.float32)
        self.std = np.asarray(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=np.float32)
        self._text_cache: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.last_timings: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def load(
        cls,
        model_name: str,
        pretrained: Path | None,
        model_config: Path | None = None,
        *,
        device: str = "cpu",
        fp16: bool = True,
        allow_hub_downloads: bool = False,
        **kwargs,
    ) -> ClipScores:
        import torch

        t0 = time.perf_counter()
        precision = "fp16" if (fp16 and torch.device(device).type == "cuda") else "fp32"
        model, tokenizer = load_clip(
            model_name, pretrained, model_config, device=device, precision=precision,
            allow_hub_downloads=allow_hub_downloads,
        )
        info = {"model": model_name, "pretrained": str(pretrained) if pretrained else None, "precision": precision}
        inst = cls(model, tokenizer, device=device, info=info, **kwargs)
        inst.info["load_s"] = round(time.perf_counter() - t0, 3)
        log.info("loaded CLIP %s from %s on %s (%s)", model_name, pretrained, device, precision)
        return inst

    @classmethod
    def from_settings(cls, settings=None) -> ClipScores:
        ann = AnnotationSettings.of(settings)
        return cls.load(
            ann.clip_model,
            ann.resolve(ann.clip_pretrained, ann.models_dir),
            ann.resolve(ann.clip_model_config, ann.models_dir),
            device=resolve_device(ann.annotation_device, ann.device),
            fp16=ann.annotation_fp16,
            allow_hub_downloads=ann.allow_hub_downloads,
            templates=ann.clip_prompt_templates,
            mask_weight=ann.clip_mask_weight,
            crop_margin=ann.clip_crop_margin,
            batch_size=ann.clip_batch_size,
            text_batch_size=ann.clip_text_batch_size,
            text_cache_size=ann.clip_text_cache_size,
        )

    def warmup(self) -> None:
        image = np.full((64, 64, 3), 127, dtype=np.uint8)
        mask = np.zeros((64, 64), dtype=bool)
        mask[16:48, 16:48] = True
        self.score(image, [mask], np.array([[16.0, 16.0, 48.0, 48.0]]), ["object"], ["object", "background"])
        self._text_cache.clear()

    def ready(self) -> bool:
        return self.model is not None

    def close(self) -> None:
        import torch

        with self._lock:
            self.model = None
            self._text_cache.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name, **self.info, "device": str(self.device), "mask_weight": self.mask_weight,
            "templates": len(self.templates),
        }

    def _autocast(self):
        import torch

        if self.dtype != torch.float32:
            return torch.autocast(self.device.type, dtype=self.dtype)
        return nullcontext()

    # ------------------------------------------------------------------ text

    def text_embeddings(self, vocabulary: tuple[str, ...]):
        """(V, D) unit-norm prompt-ensemble embeddings of the names, cached per vocabulary (LRU)."""
        import torch

        key = tuple(vocabulary)
        with self._lock:
            if key in self._text_cache:
                self._text_cache.move_to_end(key)
                return self._text_cache[key]
        prompts = [t.format(normalise_name(name)) for name in key for t in self.templates]
        tokens = self.tokenizer(prompts)
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(prompts), self.text_batch_size):
                batch = tokens[start : start + self.text_batch_size].to(self.device)
                out.append(torch.nn.functional.normalize(self.model.encode_text(batch).float(), dim=-1))
        per_prompt = torch.cat(out).view(len(key), len(self.templates), -1)
        emb = torch.nn.functional.normalize(per_prompt.mean(dim=1), dim=-1)
        with self._lock:
            self._text_cache[key] = emb
            while len(self._text_cache) > self.text_cache_size:
                self._text_cache.popitem(last=False)
        return emb

    # ------------------------------------------------------------------ images

    def image_embeddings(self, crops: np.ndarray):
        """(M, D) unit-norm embeddings of (M, S, S, 3) uint8 crops, in `batch_size` chunks."""
        import torch

        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(crops[start : start + self.batch_size]).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                mean = torch.as_tensor(self.mean, device=self.device).view(1, 3, 1, 1)
                std = torch.as_tensor(self.std, device=self.device).view(1, 3, 1, 1)
                x = ((x - mean) / std).to(self.dtype)
                out.append(torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1))
        return torch.cat(out)

    def score(
        self,
        image: np.ndarray,
        masks: list[np.ndarray],
        boxes: np.ndarray,
        targets: list[str],
        vocabulary: list[str],
    ) -> list[dict[str, float]]:
        return self.score_many([(image, masks, boxes, targets)], vocabulary)[0]

    def score_many(self, items: list[tuple], vocabulary: list[str]) -> list[list[dict[str, float]]]:
        """Scores for the instances of several images (a task's scenes): `items` holds one
        (image, masks, boxes, targets) per image. The crops of all images go through the image encoder
        together, `batch_size` per call, and every score is computed on the device and copied to the
        host in one transfer."""
        import torch

        if self.model is None:
            raise RuntimeError("the CLIP backend was closed")
        checked = []
        for image, masks, boxes, targets in items:
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"the image must be uint8 RGB (H, W, 3); got {image.dtype} {image.shape}")
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            if not (len(masks) == len(boxes) == len(targets)):
                raise ValueError(
                    f"give one mask, box and target per instance; got {len(masks)} masks, {len(boxes)} boxes, "
                    f"{len(targets)} targets"
                )
            for m in masks:
                if np.shape(m) != image.shape[:2]:
                    raise ValueError(f"mask shape {np.shape(m)} differs from the image's {image.shape[:2]}")
            checked.append((image, [np.asarray(m, dtype=bool) for m in masks], boxes, list(targets)))
        all_targets = [t for _, _, _, ts in checked for t in ts]
        if not all_targets:
            return [[] for _ in checked]

        names, index = self._vocabulary(vocabulary, all_targets)
        t0 = time.perf_counter()
        text = self.text_embeddings(names)
        t1 = time.perf_counter()
        mean_rgb = np.clip(np.round(self.mean * 255.0), 0, 255)
        box_parts, masked_parts = [], []
        for image, masks, boxes, _ in checked:
            if masks:
                b, m = instance_crops(image, masks, boxes, self.image_size, self.crop_margin, mean_rgb)
                box_parts.append(b)
                masked_parts.append(m)
        n = len(all_targets)
        emb = self.image_embeddings(np.concatenate(masked_parts + box_parts))
        emb_mask, emb_box = emb[:n], emb[n:]
        combined = torch.nn.functional.normalize(
            self.mask_weight * emb_mask + (1.0 - self.mask_weight) * emb_box, dim=-1
        )
        cos = combined @ text.T  # (N, V)
        # Each image's softmax runs over the vocabulary plus its own targets (as scored alone): names
        # appended for another image's targets are masked out of its rows.
        base = len(self._vocabulary(vocabulary, [])[0])
        allowed = np.zeros((n, len(names)), dtype=bool)
        allowed[:, :base] = True
        row = 0
        for _, _, _, targets in checked:
            own = [index[t] for t in targets]
            allowed[row : row + len(targets), own] = True
            row += len(targets)
        cos = cos.masked_fill(~torch.from_numpy(allowed).to(cos.device), float("-inf"))
        scale = self.model.logit_scale.detach().float().exp().clamp(max=100.0)
        probs = torch.softmax(scale * cos, dim=-1)
        cols = torch.as_tensor([index[t] for t in all_targets], device=cos.device)
        rows = torch.arange(n, device=cos.device)
        at = cos[rows, cols]
        table = torch.stack([
            at,
            probs[rows, cols],
            1.0 + (cos > at[:, None]).sum(dim=1).float(),
            (emb_mask * text[cols]).sum(dim=1),
            (emb_box * text[cols]).sum(dim=1),
        ], dim=1).cpu().tolist()  # the one host transfer
        t2 = time.perf_counter()
        self.last_timings = {"text_s": t1 - t0, "image_s": t2 - t1}

        out, k = [], 0
        keys = ("clip_cosine", "clip_prob", "clip_rank", "clip_cosine_mask", "clip_cosine_box")
        for _, _, _, targets in checked:
            out.append([dict(zip(keys, table[k + i], strict=True)) for i in range(len(targets))])
            k += len(targets)
        return out

    @staticmethod
    def _vocabulary(vocabulary: list[str], targets: list[str]) -> tuple[tuple[str, ...], dict[str, int]]:
        """Unique names (by normalised form, first spelling wins; targets missing from the vocabulary are
        appended) and the row of each target."""
        names: list[str] = []
        row_of: dict[str, int] = {}
        for name in list(vocabulary) + list(targets):
            key = normalise_name(name)
            if key not in row_of:
                row_of[key] = len(names)
                names.append(name)
        return tuple(names), {t: row_of[normalise_name(t)] for t in targets}


# ---------------------------------------------------------------------------- tiny model for tests

TINY_MODEL_NAME = "dreammask-tiny-clip"
TINY_MODEL_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": CLIP_VOCAB_SIZE, "width": 32, "heads": 2, "layers": 1},
}


def save_tiny_clip(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a randomly initialised open_clip model: (config JSON, weights file), loadable by `load_clip`."""
    import torch
    from open_clip.model import CLIP

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{TINY_MODEL_NAME}.json"
    config.write_text(json.dumps(TINY_MODEL_CONFIG, indent=1))
    torch.manual_seed(seed)
    model = CLIP(**TINY_MODEL_CONFIG)
    weights = directory / f"{TINY_MODEL_NAME}.bin"
    torch.save(model.state_dict(), weights)
    return config, weights
