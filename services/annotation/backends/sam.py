"""Box-prompted masks with Segment Anything (`segment-anything`'s `Sam` and `SamPredictor`).

Per image: one image embedding (`SamPredictor.set_image`, or several images in one encoder call), then the
boxes of the image through the prompt encoder and mask decoder (all at once on a GPU, one per call on the
CPU), three candidate masks per box (`multimask_output=True`) of which the one with the highest predicted
IoU is kept and upscaled to the image size. The decoder's image-only work runs once per image
(`sam_decoder`). The encoder dominates the cost.

Scores per mask: ``pred_iou`` (SAM's own IoU prediction for the kept candidate) and ``stability`` (IoU of
the low-resolution logits thresholded at ±offset, `calculate_stability_score`). Masks are then cleaned:
holes and islands smaller than the configured areas are filled / removed.

The model is built from an architecture description (`SamArchitecture`) with segment-anything's own
classes and a checkpoint file is loaded into it: the standard vit_b/l/h descriptions match Meta's
released checkpoints, and small custom descriptions (JSON beside the checkpoint) serve tests and
distilled models through the same loader.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dreammask.shared.backends import MaskBackend, MaskResult

from ..device_io import DeviceRun, InlineExecutor, Pending, host_pool, to_device
from ..mask_ops import MaskWindow, WindowMaskResult, clean_window, window_bounds
from ..settings import AnnotationSettings, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamArchitecture:
    """Hyper-parameters of a SAM model; the defaults of the non-encoder fields are SAM's own."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    encoder_mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamArchitecture:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SAM architecture keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
            if key in d:
                d[key] = tuple(d[key])
        arch = cls(**d)
        arch.check()
        return arch

    @classmethod
    def from_file(cls, path: Path) -> SamArchitecture:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read the SAM architecture file {path}: {e}") from None
        if "model_type" in data and len(data) == 1:
            return STANDARD_ARCHITECTURES[data["model_type"]]
        data.pop("model_type", None)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise ValueError("encoder_embed_dim must be divisible by encoder_num_heads")
        if any(not 0 <= i < self.encoder_depth for i in self.encoder_global_attn_indexes):
            raise ValueError(f"encoder_global_attn_indexes must lie in [0, {self.encoder_depth})")
        if self.prompt_embed_dim % 8:
            raise ValueError("prompt_embed_dim must be a multiple of 8 (the decoder upscales to dim/8 channels)")


STANDARD_ARCHITECTURES: dict[str, SamArchitecture] = {
    # segment_anything.build_sam: build_sam_vit_{h,l,b}
    "vit_h": SamArchitecture(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArchitecture(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArchitecture(768, 12, 12, (2, 5, 8, 11)),
}


def build_sam(arch: SamArchitecture):
    """A randomly initialised `Sam` of the given architecture, from segment-anything's classes."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    embedding_size = arch.image_size // arch.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.image_size,
            mlp_ratio=arch.encoder_mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(arch.encoder_global_attn_indexes),
            window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=arch.decoder_depth,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=arch.iou_head_depth,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=list(arch.pixel_mean),
        pixel_std=list(arch.pixel_std),
    )
    return sam.eval()


def architecture_for(checkpoint: Path, model_type: str, architecture: Path | None = None) -> SamArchitecture:
    """The architecture file when given, else `<checkpoint>.json` beside the weights, else the standard one."""
    if architecture is not None:
        if not Path(architecture).is_file():
            raise FileNotFoundError(
                f"SAM architecture file {architecture} does not exist; fix DREAMMASK_SAM_ARCHITECTURE or unset it"
            )
        return SamArchitecture.from_file(architecture)
    beside = Path(checkpoint).with_suffix(".json")
    if beside.is_file():
        return SamArchitecture.from_file(beside)
    try:
        return STANDARD_ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(
            f"unknown SAM model type {model_type!r}; use one of {sorted(STANDARD_ARCHITECTURES)}"
        ) from None


def load_sam(checkpoint: Path, model_type: str = "vit_h", architecture: Path | None = None):
    """Build the SAM model and load the checkpoint's state dict into it (strictly: every key must match)."""
    import torch

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"SAM checkpoint {checkpoint} not found: mount Meta's sam_vit_{{h,l,b}}_*.pth under the models "
            "directory and point DREAMMASK_SAM_CHECKPOINT (and DREAMMASK_SAM_MODEL_TYPE) at it"
        )
    arch = architecture_for(checkpoint, model_type, architecture)
    model = build_sam(arch)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(f"cannot read SAM checkpoint {checkpoint}: {e}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"SAM checkpoint {checkpoint} does not match the {model_type} architecture "
            f"(set DREAMMASK_SAM_MODEL_TYPE to the checkpoint's type, or give its architecture JSON): "
            f"{str(e).splitlines()[0]}"
        ) from None
    return model, arch


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"the image must be uint8 RGB (H, W, 3); got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the image must be uint8 RGB (H, W, 3); got shape {image.shape}")
    if min(image.shape[:2]) < 2:
        raise ValueError(f"the image is too small to segment: {image.shape[1]}x{image.shape[0]} pixels")
    return np.ascontiguousarray(image)


def as_pixel_boxes(boxes, height: int, width: int) -> np.ndarray:
    """(N, 4) float pixel boxes clipped to the image, each at least one pixel wide and high."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) array of pixel [x0, y0, x1, y1]; got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes contain NaN or infinite coordinates")
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise ValueError("every box needs x1 >= x0 and y1 >= y0 (pixel [x0, y0, x1, y1])")
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    out[:, 2] = np.maximum(out[:, 2], np.minimum(out[:, 0] + 1, width))
    out[:, 0] = np.minimum(out[:, 0], out[:, 2] - 1)
    out[:, 3] = np.maximum(out[:, 3], np.minimum(out[:, 1] + 1, height))
    out[:, 1] = np.minimum(out[:, 1], out[:, 3] - 1)
    return out


class SamMasks(MaskBackend):
    name = "sam"
    requires_gpu = True  # runs on the CPU too, slowly (a vit_b encoder pass takes ~25 s at 1024 px)
    requires_weights = True

    def __init__(
        self,
        model,
        *,
        arch: SamArchitecture,
        device: str = "cpu",
        fp16: bool = True,
        decoder_batch_size: int = 0,
        encoder_batch_size: int = 4,
        stability_offset: float = 1.0,
        min_region_area: int = 0,
        min_hole_area: int = 0,
        info: dict[str, Any] | None = None,
        dtype=None,
        attention: str = "sdpa",
        host_threads: int = -1,
    ):
        import torch
        from segment_anything import SamPredictor

        self.device = torch.device(device)
        # Half precision only where it is fast and supported; the CPU runs fp32. (`dtype` forces one,
        # e.g. bfloat16 on the CPU to test the low-precision path without a GPU.)
        if dtype is None:
            dtype = torch.float16 if (fp16 and self.device.type == "cuda") else torch.float32
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.predictor = SamPredictor(self.model)
        self.arch = arch
        if attention not in ("sdpa", "stock"):
            raise ValueError(f"attention must be 'sdpa' or 'stock', got {attention!r}")
        self.attention = attention
        if attention == "sdpa":
            from .sam_attention import use_sdpa

            use_sdpa(self.model.image_encoder)
        # 0: automatic (`decoder_chunk`); any other value is the number of boxes per decoder call.
        self.decoder_batch_size = int(decoder_batch_size)
        self.encoder_batch_size = max(1, int(encoder_batch_size))
        self.stability_offset = float(stability_offset)
        self.min_region_area = int(min_region_area)
        self.min_hole_area = int(min_hole_area)
        self.info = dict(info or {})
        self.last_timings: dict[str, float] = {}
        # Guards the model's release and the pool's creation. Runs themselves take no lock: several may be
        # in flight at once from a worker's threads (`stream`).
        self._lock = threading.Lock()
        # Threads for host work beside the device (-1: automatic, see `device_io.host_pool`).
        self.host_threads = int(host_threads)
        self._pool = None
        self._input_pool = None
        # A benchmark's stand-in for the decoder's masks: (masks (N, H, W) bool, pixel boxes (N, 4)) ->
        # masks, on the device. None in production.
        self.mask_hook = None
        # None: decode the boxes of a chunk's images together on a GPU only (`decodes_across_images`).
        self.batch_images_in_decoder: bool | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def load(
        cls,
        checkpoint: Path,
        model_type: str = "vit_h",
        architecture: Path | None = None,
        *,
        device: str = "cpu",
        **kwargs,
    ) -> SamMasks:
        t0 = time.perf_counter()
        model, arch = load_sam(checkpoint, model_type, architecture)
        info = {
            "checkpoint": str(checkpoint),
            "model_type": model_type if arch in STANDARD_ARCHITECTURES.values() else "custom",
            "checkpoint_bytes": Path(checkpoint).stat().st_size,
        }
        inst = cls(model, arch=arch, device=device, info=info, **kwargs)
        inst.info["load_s"] = round(time.perf_counter() - t0, 3)
        log.info("loaded SAM %s from %s on %s (%s)", info["model_type"], checkpoint, inst.device, inst.dtype)
        return inst

    @classmethod
    def from_settings(cls, settings=None) -> SamMasks:
        ann = AnnotationSettings.of(settings)
        return cls.load(
            ann.resolve(ann.sam_checkpoint, ann.models_dir),
            ann.sam_model_type,
            ann.resolve(ann.sam_architecture, ann.models_dir),
            device=resolve_device(ann.annotation_device, ann.device),
            fp16=ann.annotation_fp16,
            decoder_batch_size=ann.sam_decoder_batch_size,
            encoder_batch_size=ann.sam_encoder_batch_size,
            stability_offset=ann.sam_stability_offset,
            min_region_area=ann.mask_min_region_area,
            min_hole_area=ann.mask_min_hole_area,
            attention=ann.sam_attention,
            host_threads=ann.annotation_host_threads,
        )

    def warmup(self) -> None:
        side = min(64, self.arch.image_size)
        image = np.full((side, side, 3), 127, dtype=np.uint8)
        self.segment(image, np.array([[side / 4, side / 4, 3 * side / 4, 3 * side / 4]]))

    def ready(self) -> bool:
        return self.model is not None

    def close(self) -> None:
        import torch

        with self._lock:
            self.predictor = None
            self.model = None
            for pool in (self._input_pool, self._pool):
                if pool is not None:
                    pool.shutdown(wait=True)
            self._pool = self._input_pool = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.info, "device": str(self.device), "dtype": str(self.dtype).split(".")[-1],
                "attention": self.attention}

    # ------------------------------------------------------------------ work

    def _autocast(self):
        import torch

        # Some of segment-anything's modules make fp32 tensors of their own (the empty sparse prompt);
        # autocast keeps them and the half weights compatible.
        if self.dtype != torch.float32:
            return torch.autocast(self.device.type, dtype=self.dtype)
        return nullcontext()

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> list[MaskResult]:
        return self.segment_many([image], [boxes])[0]

    @property
    def pool(self):
        """The worker's threads for host work beside the device (`host_threads`; inline on the CPU)."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = host_pool(self.host_threads, self.device)
        return self._pool

    # Threads that resize images for the encoder when the host pool has threads.
    INPUT_THREADS = 2

    @property
    def input_pool(self):
        """Threads that resize the images for the encoder, apart from `pool`: with tasks in flight, the
        next task's images must not queue behind the clean-up the task before it left in the pool, or its
        encoder would wait for that clean-up. Inline where `pool` is."""
        pool = self.pool
        if self._input_pool is None:
            with self._lock:
                if self._input_pool is None:
                    self._input_pool = pool if isinstance(pool, InlineExecutor) else \
                        ThreadPoolExecutor(self.INPUT_THREADS, thread_name_prefix="annotation-input")
        return self._input_pool

    def new_run(self) -> DeviceRun:
        return DeviceRun(self.device, self.pool)

    def segment_many(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[MaskResult]]:
        """Masks for the boxes of several images (a task's scenes), through `stream`."""
        run = self.new_run()
        out: list[list[MaskResult]] = [[] for _ in images]
        chunks = self.stream(images, boxes, run)
        try:
            for chunk in chunks:
                for k, futures in zip(chunk.indices, chunk.results, strict=True):
                    out[k] = [f.result() for f in futures]
        finally:
            chunks.close()
        self.last_timings = self.timings(run.timer.summary())
        return out

    @staticmethod
    def timings(summary: dict) -> dict[str, float]:
        """This backend's part of a run's `StepTimer.summary()`."""
        dev, host = summary["device_s"], summary["host_s"]
        return {"encoder_s": dev.get("encoder", 0.0), "decoder_s": dev.get("decoder", 0.0),
                "cleanup_s": host.get("cleanup", 0.0), "prepare_s": host.get("prepare", 0.0),
                "windows_s": dev.get("windows", 0.0)}

    def stream(self, images: list[np.ndarray], boxes: list[np.ndarray], run: DeviceRun,
               keep_images: bool = False) -> Iterator[MaskChunk]:
        """The masks of a task's images, chunk by chunk (`encoder_batch_size` images per encoder call).

        Chunk k is handed over once the encoder and decoder of chunk k + 1 are queued, so whoever works
        on chunk k (scores, RLE) does it while the device encodes the next chunk. Per image, the
        decoder's masks stay on the device: their boxes and scores come to the host in one small copy
        per chunk, then each mask's window (its box and a one-pixel ring) in one copy per chunk on the
        side stream, and the pool cleans each window (`clean_window`) as soon as the copy has landed.
        The images are resized on the host by `input_pool` ahead of the encoder, as `SamPredictor.set_image`
        does. `keep_images`: also keep each image as given on the device (uint8 (H, W, 3)), for crops.

        Several runs may stream at once from different threads (a worker with tasks in flight, docs/
        annotation.md): each has its own timer, side stream and buffers; the model and the host pool are
        shared, and their device work queues on the same stream, so one task's encoder runs while another
        task's host work finishes. No lock is held between chunks.
        """
        if self.model is None:
            raise RuntimeError("the SAM backend was closed")
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box arrays; give one (N, 4) array per image")
        prepared = []
        for image, b in zip(images, boxes, strict=True):
            image = _as_rgb_uint8(image)
            h, w = image.shape[:2]
            prepared.append((image, as_pixel_boxes(b, h, w)))
        todo = [k for k, (_, b) in enumerate(prepared) if len(b)]
        chunks = [todo[s : s + self.encoder_batch_size] for s in range(0, len(todo), self.encoder_batch_size)]
        inputs = {k: self.input_pool.submit(self._host_input, prepared[k][0], run) for k in todo}
        previous = None
        for c in chunks:
            current = self._queue_chunk(c, prepared, [inputs.pop(k).result() for k in c], run, keep_images)
            if previous is not None:
                yield previous.handed()
            self._start_windows(current, run)
            previous = current
        if previous is not None:
            yield previous.handed()

    def _compute(self):
        import torch

        stack = ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(self._autocast())
        return stack

    def _host_input(self, image: np.ndarray, run: DeviceRun):
        """The image resized as the encoder wants it (`ResizeLongestSide`), in memory ready for a
        non-blocking upload."""
        with run.timer.host_step("prepare"):
            return run.transfers.pin(self.predictor.transform.apply_image(image))

    def _queue_chunk(self, indices, prepared, host_inputs, run: DeviceRun, keep_images: bool) -> _Chunk:
        """Queue a chunk's encoder and decoder on the device, and the copy of its masks' boxes and scores."""
        import torch

        tr, timer = run.transfers, run.timer
        with self._compute():
            uploaded = [tr.upload(x) for x in host_inputs]
            with timer.device_step("encoder"):
                features = self.model.image_encoder(torch.cat(
                    [self.model.preprocess(x.permute(2, 0, 1).contiguous()[None]) for x in uploaded]))
            kept = []
            if keep_images:
                for k, x in zip(indices, uploaded, strict=True):
                    image = prepared[k][0]
                    kept.append(x if tuple(x.shape[:2]) == image.shape[:2] else tr.upload(image))
            with timer.device_step("decoder"):
                decoded = self._decode_images_device(
                    [prepared[k][1] for k in indices], [prepared[k][0].shape[:2] for k in indices], features,
                    [tuple(x.shape[:2]) for x in uploaded])
                if len({tuple(masks.shape[-2:]) for masks, _, _ in decoded}) == 1:
                    summary = _mask_summary(*(torch.cat(parts) for parts in zip(*decoded, strict=True)))
                else:
                    summary = torch.cat([_mask_summary(*d) for d in decoded])
            done = tr.mark()
            pending = tr.to_host(summary)
        return _Chunk(indices=list(indices), decoded=decoded, summary=pending, done=done, images=kept)

    def _start_windows(self, chunk: _Chunk, run: DeviceRun) -> None:
        """Wait for the chunk's boxes (its decoder only), bring each mask's window to the host and queue
        its clean-up in the pool."""
        import torch

        tr, timer = run.transfers, run.timer
        with timer.host_step("wait"):
            summary = chunk.summary.wait().numpy()
        specs, pieces = [], []
        row = 0
        for j, (masks, _, _) in enumerate(chunk.decoded):
            shape = (int(masks.shape[-2]), int(masks.shape[-1]))
            for i in range(len(masks)):
                r0, r1, c0, c1, nonempty, iou, stab = summary[row]
                row += 1
                y0, y1, x0, x1 = window_bounds((int(r0), int(r1)), (int(c0), int(c1)), shape) if nonempty \
                    else (0, 0, 0, 0)
                specs.append((j, y0, x0, (y1 - y0, x1 - x0), shape, float(iou), float(stab)))
                pieces.append(masks[i, y0:y1, x0:x1])
        if tr.cuda:
            # One packed copy per chunk, queued on the side stream after the decoder: it runs beside the
            # next chunk's encoder, which the main stream already holds.
            with tr.on_side_stream(after=chunk.done) as side, self._compute(), timer.device_step("windows", side):
                for masks, _, _ in chunk.decoded:
                    masks.record_stream(side)
                packed = torch.cat([p.reshape(-1) for p in pieces]).view(torch.uint8)
                landed = tr.to_host(packed, side)
            offsets = np.cumsum([0] + [p.numel() for p in pieces])
            sources = [(landed, int(offsets[n])) for n in range(len(pieces))]
        else:
            sources = [(p.numpy(), None) for p in pieces]
        chunk.results = [[] for _ in chunk.decoded]
        for (j, y0, x0, size, shape, iou, stab), source in zip(specs, sources, strict=True):
            chunk.results[j].append(run.pool.submit(self._finish_mask, source, y0, x0, size, shape, iou, stab,
                                                    run.timer))
        chunk.decoded = [(None, None, None)] * len(chunk.decoded)  # the device masks are no longer needed

    def _finish_mask(self, source, y0, x0, size, shape, iou, stab, timer) -> WindowMaskResult:
        t = time.perf_counter()
        data, offset = source
        if offset is not None:  # a pinned buffer on its way: wait for its event, read our slice
            flat = data.wait().numpy()
            data = flat[offset : offset + size[0] * size[1]].view(bool).reshape(size)
        win = clean_window(MaskWindow(data.copy(), y0, x0, shape), self.min_region_area, self.min_hole_area)
        _ = win.tight  # computed here, in the pool, for the crops
        result = WindowMaskResult(mask=win.dense, scores={"pred_iou": iou, "stability": stab}, window=win)
        timer.add_host("cleanup", time.perf_counter() - t)
        return result

    # On the CPU, the batched decoder's copies of the image embedding (one per box) should stay about
    # cache-sized: beyond that the copies cost more than the per-call overhead batching saves.
    CPU_DECODER_ELEMENTS = 1 << 20
    # On the CPU the decoder's upscaling runs this many image tokens at a time (its intermediates, 16
    # output pixels per token, then stay in cache); a GPU takes them all at once.
    CPU_UPSCALE_ROWS = 512

    def decoder_chunk(self, embedding_numel: int | None = None) -> int:
        """Boxes per decoder call: the setting when given; else all boxes at once on a GPU (kernel-launch
        overhead dominates there), and on the CPU as many as keep the embedding copies within
        `CPU_DECODER_ELEMENTS` (a standard SAM's 256x64x64 embedding: one box per call)."""
        if self.decoder_batch_size:
            return self.decoder_batch_size
        if self.device.type != "cpu":
            return 4096
        if embedding_numel is None:
            side = self.arch.image_size // self.arch.patch_size
            embedding_numel = self.arch.prompt_embed_dim * side * side
        return max(1, self.CPU_DECODER_ELEMENTS // max(1, embedding_numel))

    def _encode(self, images: list[np.ndarray]):
        """Image embeddings of several images in one encoder call, as `SamPredictor.set_image` makes them
        one at a time (longest side resized to the model's size, normalised, padded); with each image's
        resized (input) size."""
        import torch

        model, transform = self.model, self.predictor.transform
        batch, sizes = [], []
        for image in images:
            x = torch.as_tensor(transform.apply_image(image), device=self.device).permute(2, 0, 1).contiguous()[None]
            sizes.append(tuple(x.shape[-2:]))
            batch.append(model.preprocess(x))
        return model.image_encoder(torch.cat(batch)), sizes

    def _decode_device(self, boxes: np.ndarray, size: tuple[int, int], features, input_size):
        """Best candidate mask (bool (N, H, W)), its predicted IoU and stability for each box of one image,
        on the device (`_decode_images_device` for one image)."""
        return self._decode_images_device([boxes], [size], features, [input_size])[0]

    @property
    def decodes_across_images(self) -> bool:
        """Whether one decoder call takes the boxes of all the images of an encoder chunk: on a GPU (the
        decoder is a few hundred small kernels, launched once per chunk instead of once per image); the
        CPU decodes image by image, sharing each image's state between its boxes without copies.
        `batch_images_in_decoder` forces either (tests run the GPU's path on the CPU)."""
        if self.batch_images_in_decoder is not None:
            return bool(self.batch_images_in_decoder)
        return self.device.type != "cpu"

    def _decode_images_device(self, boxes: list[np.ndarray], sizes: list[tuple[int, int]], features,
                              input_sizes: list[tuple[int, int]]) -> list[tuple]:
        """Per image of an encoder chunk (`features` (I, C, h, w), one boxes array, original size and input
        size per image): the best candidate mask (bool (N, H, W)), its predicted IoU and stability for each
        box, on the device, in `decoder_chunk` chunks of boxes.

        The computation of `SamPredictor.predict_torch(boxes=..., multimask_output=True)` keeping the
        candidate with the highest predicted IoU, except that the image-only part of the decoder runs once
        per image (`sam_decoder`) and only the kept candidate is formed and upscaled to full resolution
        (a third of the interpolation work, which at 1024 px costs more than the decoder itself); the
        tests check the masks are the same. Across images (`decodes_across_images`) the boxes of all the
        images go through the decoder together and images of the same size are upscaled together; else
        image by image. `mask_hook`, when set, replaces each image's masks (a benchmark's stand-ins).
        """
        import torch
        from segment_anything.utils.amg import calculate_stability_score

        from .sam_decoder import decode_boxes, prepare_image

        if len(boxes) > 1 and not self.decodes_across_images:
            return [self._decode_images_device([b], [size], features[j : j + 1], [input_size])[0]
                    for j, (b, size, input_size) in enumerate(zip(boxes, sizes, input_sizes, strict=True))]
        model, transform = self.model, self.predictor.transform
        counts = [len(b) for b in boxes]
        # the boxes in the encoder's frame, computed on the host as `apply_boxes_torch` would on the device
        # (float32 either way), then uploaded in one copy with each box's image
        transformed = torch.cat([transform.apply_boxes_torch(torch.as_tensor(np.asarray(b), dtype=torch.float32),
                                                             tuple(size))
                                 for b, size in zip(boxes, sizes, strict=True)])
        image_of_box = np.repeat(np.arange(len(boxes)), counts)
        upload = to_device(np.concatenate([transformed.numpy(), image_of_box[:, None].astype(np.float32)], axis=1),
                           self.device)
        transformed = upload[:, :4].to(self.dtype)
        image_index = upload[:, 4].long() if len(boxes) > 1 else None  # one image: its state shared, not copied
        prepared = prepare_image(model, features)
        step = self.decoder_chunk(features[0].numel())
        upscale_rows = self.CPU_UPSCALE_ROWS if self.device.type == "cpu" else None
        chosen, iou = [], []
        for start in range(0, len(transformed), step):
            sparse, _ = model.prompt_encoder(points=None, boxes=transformed[start : start + step], masks=None)
            rows = image_index[start : start + step] if image_index is not None else None
            logits, best = decode_boxes(model, prepared, sparse, upscale_rows, rows)  # (n, 256, 256) kept logits
            chosen.append(logits)
            iou.append(best.float())
        chosen, iou = torch.cat(chosen), torch.cat(iou)
        # 0/0 (no pixel above the lower threshold) is an empty, hence unstable, mask.
        stab = torch.nan_to_num(calculate_stability_score(chosen.float(), model.mask_threshold,
                                                          self.stability_offset), nan=0.0)
        per_image = list(zip(chosen.split(counts), iou.split(counts), stab.split(counts), strict=True))
        out: list = [None] * len(boxes)
        frames: dict[tuple, list[int]] = {}  # images upscaled together: same input and original size
        for j, (size, input_size) in enumerate(zip(sizes, input_sizes, strict=True)):
            frames.setdefault((tuple(input_size), tuple(size)), []).append(j)
        for (input_size, size), members in frames.items():
            logits = torch.cat([per_image[j][0] for j in members])
            # upscaled `step` masks at a time: full-resolution float logits are large
            masks = torch.cat([self._upscale(logits[s : s + step, None], input_size, size)[:, 0] > model.mask_threshold
                               for s in range(0, len(logits), step)])
            for j, part in zip(members, masks.split([counts[j] for j in members]), strict=True):
                if self.mask_hook is not None:
                    part = self.mask_hook(part, to_device(np.asarray(boxes[j], dtype=np.float32), self.device))
                out[j] = (part, per_image[j][1], per_image[j][2])
        return out

    def _decode(self, boxes: np.ndarray, size: tuple[int, int], features=None, input_size=None):
        """`_decode_device` on host arrays; `features`/`input_size` default to the predictor's image."""
        if features is None:
            features, input_size = self.predictor.features, self.predictor.input_size
        masks, iou, stab = self._decode_device(boxes, size, features, input_size)
        return masks.cpu().numpy(), iou.cpu().numpy(), stab.cpu().numpy()

    def _upscale(self, logits, input_size, original_size):
        """`Sam.postprocess_masks`, skipping its second resize when it would not change the size (a
        bilinear resize to the same size is the identity)."""
        import torch.nn.functional as F

        side = self.model.image_encoder.img_size
        x = F.interpolate(logits, (side, side), mode="bilinear", align_corners=False)
        x = x[..., : input_size[0], : input_size[1]]
        if tuple(x.shape[-2:]) != tuple(original_size):
            x = F.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)
        return x


def _mask_summary(masks, iou, stab):
    """(N, 7) float32 per mask: the rows [r0, r1) and columns [c0, c1) its pixels span, whether it has
    any, its predicted IoU and stability; computed on the device, copied to the host in one piece."""
    import torch

    h, w = masks.shape[-2:]
    rows, cols = masks.any(dim=2).to(torch.uint8), masks.any(dim=1).to(torch.uint8)
    span = torch.stack([rows.argmax(dim=1), h - rows.flip(1).argmax(dim=1),
                        cols.argmax(dim=1), w - cols.flip(1).argmax(dim=1), rows.amax(dim=1)], dim=1)
    return torch.cat([span.float(), iou.float()[:, None], stab.float()[:, None]], dim=1)


@dataclass
class MaskChunk:
    """What `SamMasks.stream` hands over per chunk: the images' indices in the task, per image the futures
    of its masks' `WindowMaskResult` (cleaned), and the images on the device when asked for."""

    indices: list[int]
    results: list[list[Future]]
    images: list


@dataclass
class _Chunk:
    indices: list[int]
    decoded: list
    summary: Pending
    done: Any
    images: list
    results: list[list[Future]] = field(default_factory=list)

    def handed(self) -> MaskChunk:
        return MaskChunk(self.indices, self.results, self.images)


def save_tiny_sam(directory: Path, arch: SamArchitecture | None = None, seed: int = 0) -> Path:
    """Write a randomly initialised SAM (checkpoint + architecture JSON beside it) for tests and demos."""
    import torch

    arch = arch or TINY_ARCHITECTURE
    torch.manual_seed(seed)
    model = build_sam(arch)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / "sam_tiny.pth"
    torch.save(model.state_dict(), checkpoint)
    checkpoint.with_suffix(".json").write_text(json.dumps(arch.to_dict(), indent=1))
    return checkpoint


# Small enough to run in milliseconds on a CPU; same classes and data flow as the real models.
TINY_ARCHITECTURE = SamArchitecture(
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    image_size=128,
    patch_size=16,
    window_size=4,
    prompt_embed_dim=32,
    mask_in_chans=4,
    decoder_depth=1,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
