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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dreammask.shared.backends import ScoreBackend
from dreammask.shared.schemas import normalise_name

from ..device_io import DeviceRun, InlineExecutor, StepTimer, Transfers, to_device
from ..mask_ops import MaskWindow
from ..settings import DEFAULT_PROMPT_TEMPLATES, AnnotationSettings, resolve_device
from .clip_crops import _square_region, device_crops, device_crops_many, instance_crops  # noqa: F401 - also this module's API

log = logging.getLogger(__name__)

CLIP_VOCAB_SIZE = 49408  # the BPE vocabulary every OpenAI/LAION CLIP text tower is trained with

# The crops each `clip_views` setting encodes (in this order), and the score columns it reports.
VIEWS = {"masked+box": ("masked", "box"), "masked": ("masked",), "box": ("box",)}
SCORE_KEYS = {
    "masked+box": ("clip_cosine", "clip_prob", "clip_rank", "clip_cosine_mask", "clip_cosine_box"),
    "masked": ("clip_cosine", "clip_prob", "clip_rank", "clip_cosine_mask"),
    "box": ("clip_cosine", "clip_prob", "clip_rank", "clip_cosine_box"),
}


@dataclass
class ScoringRun:
    """One task's scoring: its vocabulary (with the targets it lacks), the text embeddings, and the score
    tables of the chunks queued so far, still on the device."""

    names: tuple[str, ...]
    index: dict[str, int]
    base: int  # names of the vocabulary itself; the rest are targets appended for some image
    text: Any
    run: DeviceRun
    tables: list = field(default_factory=list)
    keys: list[tuple[Any, int]] = field(default_factory=list)  # (item key, instances) per scored image


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
        views: str = "masked+box",
        crops: str = "auto",
    ):
        import torch

        if views not in VIEWS:
            raise ValueError(f"views must be one of {sorted(VIEWS)}, got {views!r}")
        if crops not in ("auto", "device", "host"):
            raise ValueError(f"crops must be 'auto', 'device' or 'host', got {crops!r}")
        self.views = views
        self.crops = crops

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
        # on the device once: a copy from the host per call would wait for the queued work first
        self._mean_std = tuple(torch.as_tensor(v, device=self.device).view(1, 3, 1, 1) for v in (self.mean, self.std))
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
            views=ann.clip_views,
            crops=ann.clip_crops,
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
            "templates": len(self.templates), "views": self.views,
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

    def image_embeddings(self, crops, timer: StepTimer | None = None):
        """(M, D) unit-norm embeddings of crops, in `batch_size` chunks: (M, S, S, 3) uint8 host crops, or
        (M, 3, S, S) float device crops in [0, 255]."""
        import torch

        transfers = Transfers(self.device, timer)
        mean, std = self._mean_std
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(crops), self.batch_size):
                part = crops[start : start + self.batch_size]
                if isinstance(part, np.ndarray):
                    x = transfers.upload(part).permute(0, 3, 1, 2).float().div_(255.0)
                else:
                    x = part.div(255.0)
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
        checked = [self._check(*item) for item in items]
        scoring = self.begin(vocabulary, [t for item in checked for t in item[3]])
        self.score_chunk(scoring, list(enumerate(checked)))
        out = self.finish(scoring)
        return [out.get(k, []) for k in range(len(checked))]

    @property
    def wants_device_images(self) -> bool:
        return self.crops == "device" or (self.crops == "auto" and self.device.type == "cuda")

    @staticmethod
    def timings(summary: dict) -> dict[str, float]:
        """This backend's part of a run's `StepTimer.summary()`."""
        dev, host = summary["device_s"], summary["host_s"]
        return {"text_s": host.get("text", 0.0), "crops_s": dev.get("crops", 0.0) + host.get("crops", 0.0),
                "encoder_s": dev.get("clip", 0.0),
                "image_s": dev.get("crops", 0.0) + host.get("crops", 0.0) + dev.get("clip", 0.0)}

    def _check(self, image, masks, boxes, targets):
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
            shape = tuple(m.shape if isinstance(m, MaskWindow) else np.shape(m))
            if shape != image.shape[:2]:
                raise ValueError(f"mask shape {shape} differs from the image's {image.shape[:2]}")
        masks = [m if isinstance(m, MaskWindow) else np.asarray(m, dtype=bool) for m in masks]
        return image, masks, boxes, list(targets)

    def begin(self, vocabulary: list[str], targets: list[str], run: DeviceRun | None = None) -> ScoringRun:
        """Start scoring a task whose instances' target names are `targets` (all of them, in any order):
        the vocabulary with the targets it lacks, and its text embeddings (cached per vocabulary)."""
        if self.model is None:
            raise RuntimeError("the CLIP backend was closed")
        run = run or DeviceRun(self.device, InlineExecutor())
        names, index = self._vocabulary(vocabulary, targets)
        with run.timer.host_step("text"):
            text = self.text_embeddings(names) if targets else None
        return ScoringRun(names=names, index=index, base=len(self._vocabulary(vocabulary, [])[0]), text=text,
                          run=run)

    def score_chunk(self, scoring: ScoringRun, items: list[tuple], images_on_device: list | None = None) -> None:
        """Queue the scores of some images of the task: `items` holds (key, (image, masks, boxes, targets))
        per image, masks as (H, W) arrays or `MaskWindow`s; `images_on_device` the same images on the device
        (uint8 (H, W, 3)) when the crops are cut there. Every crop of the chunk goes through the image
        encoder in `batch_size` batches; the scores stay on the device until `finish`."""
        import torch

        on_device = images_on_device if images_on_device is not None else [None] * len(items)
        kept = [(key, item, dev) for (key, item), dev in zip(items, on_device, strict=True) if item[3]]
        if not kept:
            return
        timer = scoring.run.timer
        views = VIEWS[self.views]
        mean_rgb = np.clip(np.round(self.mean * 255.0), 0, 255)
        with torch.inference_mode():
            if self.wants_device_images:
                with timer.device_step("crops"):
                    transfers = Transfers(self.device, timer)
                    crop_items = [(dev if dev is not None else transfers.upload(image),
                                   [m if isinstance(m, MaskWindow) else MaskWindow.from_mask(m) for m in masks],
                                   boxes) for _, (image, masks, boxes, _), dev in kept]
                    # every masked crop of the chunk, then every box crop
                    crops = device_crops_many(crop_items, self.image_size, self.crop_margin, mean_rgb, views,
                                              upload=transfers.upload).flatten(0, 1)
            else:
                with timer.host_step("crops"):
                    parts = {v: [] for v in views}
                    for _, (image, masks, boxes, _), _ in kept:
                        full = [m.dense if isinstance(m, MaskWindow) else m for m in masks]
                        crops = instance_crops(image, full, boxes, self.image_size, self.crop_margin, mean_rgb,
                                               views)
                        for v in views:
                            parts[v].append(crops[v])
                    crops = np.concatenate([c for v in views for c in parts[v]])
            with timer.device_step("clip"):
                emb = self.image_embeddings(crops, timer)
                per_view = len(emb) // len(views)
                by_view = {v: emb[k * per_view : (k + 1) * per_view] for k, v in enumerate(views)}
                scoring.tables.append(self._table(scoring, by_view, [item[3] for _, item, _ in kept]))
        scoring.keys += [(key, len(item[3])) for key, item, _ in kept]

    def _table(self, scoring: ScoringRun, by_view: dict, targets: list[list[str]]):
        """(N, columns) scores of a chunk's instances, on the device."""
        import torch

        text, names, index = scoring.text, scoring.names, scoring.index
        emb_mask, emb_box = by_view.get("masked"), by_view.get("box")
        if emb_mask is not None and emb_box is not None:
            combined = torch.nn.functional.normalize(
                self.mask_weight * emb_mask + (1.0 - self.mask_weight) * emb_box, dim=-1
            )
        else:
            combined = emb_mask if emb_mask is not None else emb_box
        flat = [t for ts in targets for t in ts]
        n = len(flat)
        cos = combined @ text.T  # (N, V)
        # Each image's softmax runs over the vocabulary plus its own targets (as scored alone): names
        # appended for another image's targets are masked out of its rows.
        allowed = np.zeros((n, len(names)), dtype=bool)
        allowed[:, : scoring.base] = True
        row = 0
        for ts in targets:
            allowed[row : row + len(ts), [index[t] for t in ts]] = True
            row += len(ts)
        cos = cos.masked_fill(~to_device(allowed, cos.device), float("-inf"))
        scale = self.model.logit_scale.detach().float().exp().clamp(max=100.0)
        probs = torch.softmax(scale * cos, dim=-1)
        cols = to_device(np.array([index[t] for t in flat], dtype=np.int64), cos.device)
        rows = torch.arange(n, device=cos.device)
        at = cos[rows, cols]
        columns = [at, probs[rows, cols], 1.0 + (cos > at[:, None]).sum(dim=1).float()]
        columns += [(e * text[cols]).sum(dim=1) for e in (emb_mask, emb_box) if e is not None]
        return torch.stack(columns, dim=1)

    def finish(self, scoring: ScoringRun) -> dict[Any, list[dict[str, float]]]:
        """Every queued score, copied to the host in one transfer: {key: one dict per instance}."""
        import torch

        if not scoring.tables:
            return {}
        table = torch.cat(scoring.tables)
        scoring.run.timer.count("d2h_copies")
        scoring.run.timer.count("d2h_bytes", table.numel() * table.element_size())
        table = table.cpu().tolist()  # the one host transfer
        keys = SCORE_KEYS[self.views]
        out, k = {}, 0
        for key, n in scoring.keys:
            out[key] = [dict(zip(keys, table[k + i], strict=True)) for i in range(n)]
            k += n
        self.last_timings = self.timings(scoring.run.timer.summary())
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
