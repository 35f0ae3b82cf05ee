"""The GPU check: one prepared script for a short loan of one large GPU (<= 8 minutes on an H200).

With randomly initialised full-size models (no weights can be downloaded), in one run:
  1. ``gligen``: GLIGEN (SD-1.4 architecture) at 512 px, fp16, 20 steps: bare diffusers
     (`StableDiffusionGLIGENPipeline.__call__`, batch 1) against our renderer at batch 1/4/8/16 on the same
     weights and quality settings (images/s, peak memory);
  2. ``annotation``: SAM vit_h + CLIP ViT-L-14, tasks of 8 images x 8 boxes as a GPU worker runs them:
     one task and tasks back to back against the compute floor (encoder + CLIP alone), per-step times
     (CUDA events, host steps, copies, GPU idle), mask statistics, a pass with blob masks; encoder
     images/s at batch 1/4/8 and with segment-anything's own attention; each CLIP choice's cost;
  3. ``trainer``: one FC-CLIP ConvNeXt-L training step (forward, backward, optimizer) with IAT on and off,
     built with the trainer's own config and model builders;
  4. ``oom``: out-of-memory recovery on the real allocator: the process is capped below what a batch of 16
     needs, the renderer must halve and finish every scene;
  5. ``compile``: our path with torch.compile (warm-up for every batch size, then recompiles counted),
     last, when time allows.
Before each part the time left is checked against the part's estimate; a part that does not fit is
skipped and says so. Figures go to a JSON file (--out) and, as the last line, to stdout.

    python bench/gpu.py --out gpu.json              # on the GPU machine
    python bench/gpu.py --tiny                      # CPU, test-sized models (runs in `make test`)

In --tiny mode the same code runs on tiny models on the CPU, and the out-of-memory error is injected
(the CPU has no CUDA allocator to exhaust). Exit status 1 when any part failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "synthesis"))  # tiny_gligen: the tests' checkpoint builder
sys.path.insert(0, str(ROOT / "bench"))

GOAL_GLIGEN_SPEEDUP = 2.0  # our best images/s over bare diffusers at batch 1, equal quality settings
GOAL_ANNOTATION_RATIO = 1.15


class Clock:
    def __init__(self, budget_s: float):
        self.t0 = time.perf_counter()
        self.budget_s = budget_s

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.startswith("cuda") else None


def free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- 1. GLIGEN

def build_gligen_pipe(tiny: bool, device: str, work: Path):
    import torch
    from diffusers import StableDiffusionGLIGENPipeline

    if tiny:
        from tiny_gligen import tiny_gligen_components

        parts = tiny_gligen_components(work)
    else:
        from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
        from tiny_gligen import build_clip_tokenizer
        from transformers import CLIPTextConfig, CLIPTextModel

        torch.manual_seed(0)
        parts = {
            "unet": UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                         attention_type="gated"),
            "vae": AutoencoderKL(block_out_channels=(128, 256, 512, 512),
                                 down_block_types=("DownEncoderBlock2D",) * 4,
                                 up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
                                 latent_channels=4, sample_size=512),
            "text_encoder": CLIPTextModel(CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)),
            "tokenizer": build_clip_tokenizer(work / "bpe"),
            "scheduler": PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1),
        }
    pipe = StableDiffusionGLIGENPipeline(**parts, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe.to(device, dtype)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    return pipe


def layouts(n: int, seed: int = 0):
    from synthesis import make_layouts

    return make_layouts("gpu", n, seed)


def make_renderer(pipe, batch: int, size: int, **extra):
    from dreammask.services.synthesis.backends.gligen import GligenRenderer
    from dreammask.services.synthesis.model_loading import apply_memory_options
    from dreammask.services.synthesis.settings import SynthesisSettings

    settings = SynthesisSettings(gligen_batch_size=batch, gligen_warmup_image_size=size, **extra)
    apply_memory_options(pipe, settings)
    r = GligenRenderer(pipe, settings)
    r.warmup()
    return r


def part_gligen(args, clock: Clock, work: Path, out: dict) -> dict:
    import torch

    from dreammask.shared.schemas import SynthesisParams

    device, size, steps = args.device, args.size, args.steps
    pipe = build_gligen_pipe(args.tiny, device, work)
    params = SynthesisParams(steps=steps, guidance_scale=7.5, gligen_scheduled_sampling_beta=0.3)
    res: dict = {"image_size": size, "steps": steps, "guidance_scale": 7.5, "dtype": str(pipe.unet.dtype),
                 "scheduler": type(pipe.scheduler).__name__}

    def bare(n: int) -> float:
        lays = layouts(n, seed=1)
        sync(device)
        t = time.perf_counter()
        for i, lay in enumerate(lays):
            pipe(prompt=lay.caption, gligen_phrases=[o.category for o in lay.objects],
                 gligen_boxes=[o.box for o in lay.objects], generator=torch.Generator("cpu").manual_seed(i),
                 num_inference_steps=steps, guidance_scale=7.5, gligen_scheduled_sampling_beta=0.3,
                 height=size, width=size, output_type="np")
        sync(device)
        return n / (time.perf_counter() - t)

    bare(1)  # warm
    reset_peak(device)
    res["diffusers_batch1_images_per_s"] = round(bare(args.bare_images), 3)
    res["diffusers_peak_gib"] = peak_gib(device)

    ours = {}
    for b in args.batches:
        if clock.left() < args.est_gligen_batch_s * (1 + b / 8):
            ours[str(b)] = {"skipped": f"{clock.left():.0f} s left"}
            continue
        r = make_renderer(pipe, b, size)
        n = max(b, args.min_images)
        lays = layouts(n, seed=2)
        reset_peak(device)
        sync(device)
        t = time.perf_counter()
        outs = r.render(lays, list(range(n)), params, size)
        sync(device)
        dt = time.perf_counter() - t
        if not all(hasattr(o, "image") for o in outs):
            raise RuntimeError(f"our renderer failed at batch {b}: {[getattr(o, 'reason', '') for o in outs]}")
        ours[str(b)] = {"images_per_s": round(n / dt, 3), "peak_gib": peak_gib(device), "images": n}
        del r, outs
        free(device)
    res["ours"] = ours
    measured = [v["images_per_s"] for v in ours.values() if "images_per_s" in v]
    best = max(measured) if measured else None
    base = res["diffusers_batch1_images_per_s"]
    if "1" in ours and "images_per_s" in ours["1"]:
        res["ours_batch1_over_diffusers_batch1"] = round(ours["1"]["images_per_s"] / base, 3)
    res["best_over_diffusers_batch1"] = round(best / base, 3) if best else None
    res["goal_speedup"] = GOAL_GLIGEN_SPEEDUP
    res["meets_goal"] = bool(best and best / base >= GOAL_GLIGEN_SPEEDUP)

    out["_pipe"] = pipe
    return res


def part_compile(args, clock: Clock, work: Path, out: dict) -> dict:
    """Our path with torch.compile: the warm-up compiles every batch size up to --compile-batch (each with
    the fusers on and off), then a task renders with no recompile (counted). Last, since it is the part
    most likely not to fit."""
    from torch._dynamo.utils import counters

    from dreammask.shared.schemas import SynthesisParams

    device, size, cb = args.device, args.size, args.compile_batch
    pipe = out.get("_pipe") or build_gligen_pipe(args.tiny, device, work)
    params = SynthesisParams(steps=args.steps, guidance_scale=7.5, gligen_scheduled_sampling_beta=0.3)
    unet = pipe.unet
    try:
        t = time.perf_counter()
        r = make_renderer(pipe, cb, size, gligen_torch_compile=True, gligen_compile_backend=args.compile_backend)
        warm_s = time.perf_counter() - t
        graphs = counters["stats"]["unique_graphs"]
        n = max(cb, args.min_images) + 3  # a tail batch too
        lays = layouts(n, seed=3)
        sync(device)
        t = time.perf_counter()
        r.render(lays, list(range(n)), params, size)
        sync(device)
        dt = time.perf_counter() - t
        return {"batch": cb, "images": n, "images_per_s": round(n / dt, 3), "warmup_s": round(warm_s, 1),
                "graphs_after_warmup": graphs, "recompiles_after_warmup": counters["stats"]["unique_graphs"] - graphs,
                "backend": args.compile_backend}
    finally:
        pipe.unet = unet


# ---------------------------------------------------------------------------- 2. annotation

def part_annotation(args, clock: Clock, work: Path, out: dict) -> dict:
    """SAM vit_h + CLIP ViT-L-14 annotating tasks of 8 images x 8 boxes at 1024 px as a GPU worker does
    (encoder batch 4, the host pool, crops cut on the device), with `bench/annotation.py`'s pieces: the
    task against its compute floor (encoder + CLIP on the same crops, alone, same batches), one task
    alone and tasks back to back; where the time goes (CUDA events per device step, host steps, copies,
    GPU idle); mask statistics; the same with blob masks in place of the decoder's (random weights make
    noise masks); the encoder's images/s by batch and with segment-anything's attention; each CLIP
    choice's cost. The steps after the steady state run only while the part stays within its estimate
    (--tiny runs them all: its CPU timings say nothing about a GPU's)."""
    from annotation import (
        VOCABULARY,
        Floor,
        MaskStats,
        annotate,
        blob_masks,
        build_clip_backend,
        build_sam_backend,
        clip_choice_costs,
        make_task,
        per_image_steps,
        steady,
    )

    from dreammask.services.annotation.pipeline import AnnotationPipeline

    device, tiny = args.device, args.tiny
    t_start = time.perf_counter()
    _annotation_settings(args)

    def fits(seconds: float) -> bool:  # an optional step, within the part's estimate
        return tiny or time.perf_counter() - t_start + seconds <= args.est_annotation_s

    n_img, n_box, side = args.annotation_images, 8, (128 if tiny else 1024)
    # --tiny runs the GPU worker's configuration on the CPU: a host pool and crops cut "on the device"
    sam = build_sam_backend(args.sam, device, encoder_batch_size=args.annotation_encoder_batch,
                            host_threads=2 if tiny else -1)
    clip = build_clip_backend(args.clip, device, work, crops="device")
    pipe = AnnotationPipeline(sam, clip)
    res: dict = {"sam": args.sam, "clip": args.clip, "images": n_img, "boxes_per_image": n_box, "image_size": side,
                 "encoder_batch_size": sam.encoder_batch_size, "decoder_boxes_per_call": sam.decoder_chunk(),
                 "host_threads": getattr(sam.pool, "_max_workers", 0), "clip_crops_on_device": clip.wants_device_images,
                 "build_s": round(time.perf_counter() - t_start, 1)}
    rng = np.random.default_rng(0)
    clip.text_embeddings(clip._vocabulary(VOCABULARY, [])[0])  # once per job in production
    annotate(pipe, *make_task(rng, 2, 64, 2, "w"), device)
    images, layouts = make_task(rng, n_img, side, n_box)
    boxes = [AnnotationPipeline._boxes(i, lay) for i, lay in zip(images, layouts, strict=True)]
    floor = Floor(sam, clip, images, layouts, sam.segment_many(images, boxes))
    annotate(pipe, images, layouts, device)  # warm at full size
    enc, clp, single = [], [], []
    for _ in range(args.annotation_repeats):
        enc.append(floor.encoder())
        clp.append(floor.clip_forward())
        single.append(annotate(pipe, images, layouts, device))
    floor_s = min(enc) + min(clp)
    single_s, single_steps = min(single, key=lambda r: r[0])
    tasks = [(images, layouts)] + [make_task(rng, n_img, side, n_box, f"s{k}") for k in range(1, args.annotation_tasks)]
    steady_s, steady_each, steady_steps = steady(pipe, tasks, device)
    res.update({
        "floor_s": round(floor_s, 4), "encoder_s": round(min(enc), 4), "clip_s": round(min(clp), 4),
        "clip_crops": floor.n_crops, "single_task_s": round(single_s, 4), "steady_s_per_task": round(steady_s, 4),
        "steady_task_s": [round(x, 4) for x in steady_each], "tasks_steady": len(tasks),
        "single_task_ratio": round(single_s / floor_s, 4), "steady_ratio": round(steady_s / floor_s, 4),
        "goal_ratio": GOAL_ANNOTATION_RATIO,
        "meets_goal": max(single_s, steady_s) / floor_s <= GOAL_ANNOTATION_RATIO,
        "whole_to_encoder_ratio": round(single_s / min(enc), 4),
        # per task: CUDA events for the device steps, wall clock for host steps (summed over the pool's
        # threads), device-to-host copies and bytes, GPU idle = wall - union of the device steps
        "steps_single_task": per_image_steps(single_steps, 1), "steps_steady_last_task": per_image_steps(steady_steps, 1),
        "backends": {"sam": dict(sam.last_timings), "clip": dict(clip.last_timings)},
    })
    skipped = []
    if fits(args.est_annotation_stats_s):
        stats = MaskStats()
        sam.mask_hook = stats
        try:
            annotate(pipe, images, layouts, device)
        finally:
            sam.mask_hook = None
        res["mask_stats"] = stats.summary()
    else:
        skipped.append("mask_stats")
    if fits(args.est_annotation_blob_s):
        sam.mask_hook = blob_masks
        try:
            annotate(pipe, images, layouts, device)  # warm
            blob_s, blob_each, blob_steps = steady(pipe, tasks, device)
            stats = MaskStats()
            sam.mask_hook = lambda m, b: stats(blob_masks(m, b), b)
            annotate(pipe, images, layouts, device)
        finally:
            sam.mask_hook = None
        res["blob_masks"] = {"steady_s_per_task": round(blob_s, 4), "steady_ratio": round(blob_s / floor_s, 4),
                             "steady_task_s": [round(x, 4) for x in blob_each],
                             "steps_last_task": per_image_steps(blob_steps, 1), "mask_stats": stats.summary(),
                             "backends": {"sam": dict(sam.last_timings), "clip": dict(clip.last_timings)}}
    else:
        skipped.append("blob_masks")
    if fits(args.est_annotation_encoder_s):
        res.update(_encoder_rates(sam, floor, images, device))
    else:
        skipped.append("encoder_rates")
    if fits(args.est_annotation_choices_s):
        models = ["tiny"] if tiny else ["ViT-B-16", "ViT-L-14"]
        res["clip_choices_per_image"] = clip_choice_costs(models, args.clip, floor, n_box, device, work)
    else:
        skipped.append("clip_choices")
    res["skipped_to_fit"] = skipped
    del pipe, floor, sam, clip
    free(device)
    return res


def _annotation_settings(args) -> None:
    """The annotation part's own settings (kept here, beside it). Estimates in seconds on an H200, from
    the first run (the encoder at 29 images/s at batch 8; the task then took 8.48 s, the islands pass
    being quadratic) with the clean-up now linear: building vit_h and ViT-L-14 with random weights on the
    host about 20 s, each task of 8 random-weight images about 1-3 s (its clean-up works through noise
    masks of thousands of islands), 8 such tasks."""
    defaults = {"annotation_encoder_batch": 2 if args.tiny else 4, "annotation_repeats": 2, "annotation_tasks": 4}
    steps = {"est_annotation_stats_s": 8, "est_annotation_blob_s": 10, "est_annotation_encoder_s": 10,
             "est_annotation_choices_s": 12}
    for k, v in {**defaults, **{k: v / 20 if args.tiny else v for k, v in steps.items()}}.items():
        if not hasattr(args, k):
            setattr(args, k, v)


def _encoder_rates(sam, floor, images, device) -> dict:
    """SAM's encoder alone on images already on the device: images/s at batch 1/4/8, and with
    segment-anything's own attention against the fused one at the floor's batch (time, peak memory)."""
    import torch

    from dreammask.services.annotation.backends.sam_attention import use_sdpa, use_stock

    with torch.inference_mode(), sam._autocast():
        inputs = torch.cat(list(floor.batches))

        def timed(b: int) -> float:
            sync(device)
            t = time.perf_counter()
            for i in range(0, len(inputs), b):
                sam.model.image_encoder(inputs[i : i + b])
            sync(device)
            return time.perf_counter() - t

        rates = {}
        for b in (1, 4, 8):
            if b <= len(images):
                timed(b)
                rates[str(b)] = round(len(images) / min(timed(b) for _ in range(2)), 3)
        b = sam.encoder_batch_size
        use_stock(sam.model.image_encoder)
        try:
            timed(b)
            reset_peak(device)
            stock = min(timed(b) for _ in range(2))
            stock_peak = peak_gib(device)
        finally:
            use_sdpa(sam.model.image_encoder)
        reset_peak(device)
        sdpa = min(timed(b) for _ in range(2))
        sdpa_peak = peak_gib(device)
    return {"encoder_images_per_s_by_batch": rates, "encoder_stock_attention_s": round(stock, 4),
            "encoder_sdpa_s": round(sdpa, 4), "encoder_sdpa_speedup": round(stock / sdpa, 3),
            "encoder_peak_gib_stock": stock_peak, "encoder_peak_gib_sdpa": sdpa_peak}


# ---------------------------------------------------------------------------- 3. trainer

def part_trainer(args, clock: Clock, work: Path, out: dict) -> dict:
    """Small on purpose: the trainer's public builders only, so a change there fails here loudly."""
    import torch

    from dreammask.trainer.engine.optim import build_optimizer
    from dreammask.trainer.modeling import build_model
    from dreammask.trainer.testing import TINY_VOCABULARY, tiny_batch, tiny_cfg

    device = args.device
    if args.tiny:
        from dreammask.trainer.config.engine import add_engine_config

        cfg, side = tiny_cfg(work / "fcclip"), 64
        add_engine_config(cfg)
    else:
        from dreammask.trainer.config.engine import get_training_cfg
        from dreammask.trainer.modeling.backbone.clip_convnext import build_clip_model

        cfg, side = get_training_cfg("dreammask_convnext_large"), 1024
        path = work / "clip-random.pt"
        torch.manual_seed(0)
        torch.save(build_clip_model(cfg.MODEL.FC_CLIP.CLIP_MODEL_NAME, None).state_dict(), path)
        cfg.MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS = str(path)
    batch = tiny_batch(synthetic=(False, True) * (args.trainer_batch // 2), size=side)
    batch = [{**x, "image": x["image"].to(device),
              "instances": {k: v.to(device) for k, v in x["instances"].items()}} for x in batch]
    res = {"model": "tiny" if args.tiny else "convnext_large", "image_size": side, "batch": len(batch)}
    for iat in (False, True):
        c = cfg.clone()
        c.defrost()
        c.MODEL.DEVICE = device
        c.MODEL.DREAMMASK.ENABLED = iat
        torch.manual_seed(0)
        model = build_model(c).to(device)
        model.set_vocabulary(**TINY_VOCABULARY)
        model.train()
        opt = build_optimizer(c, model)
        times, last = [], {}
        for _ in range(args.trainer_steps + 1):
            sync(device)
            t = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                losses = model(batch)
            total = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sync(device)
            times.append(time.perf_counter() - t)
            last = {k: float(v.detach()) for k, v in losses.items()}
        if not all(np.isfinite(v) for v in last.values()):
            raise RuntimeError(f"non-finite losses with IAT {'on' if iat else 'off'}: {last}")
        key = "iat_on" if iat else "iat_off"
        res[f"step_ms_{key}"] = round(1000 * float(np.median(times[1:])), 2)
        res[f"losses_{key}"] = sorted(last)
        del model, opt
        free(device)
    if "loss_sra" not in res["losses_iat_on"]:
        raise RuntimeError(f"IAT on gave no loss_sra (losses: {res['losses_iat_on']}); the trainer changed")
    res["iat_overhead"] = round(res["step_ms_iat_on"] / res["step_ms_iat_off"] - 1, 4)
    return res


# ---------------------------------------------------------------------------- 4. OOM recovery

def part_oom(args, clock: Clock, work: Path, out: dict) -> dict:
    import torch

    from dreammask.shared.schemas import SynthesisParams

    device, size = args.device, args.size
    pipe = out.get("_pipe") or build_gligen_pipe(args.tiny, device, work)
    b = args.oom_batch
    params = SynthesisParams(steps=2, guidance_scale=7.5)
    r = make_renderer(pipe, b, size)
    lays = layouts(b, seed=4)
    res = {"batch": b}
    if device.startswith("cuda"):
        # Cap this process between what batch 2 needs and what batch b needs: the real allocator fails.
        free(device)
        reset_peak(device)
        r.render(lays[:2], [0, 1], params, size)
        need2 = torch.cuda.max_memory_allocated()
        total = torch.cuda.get_device_properties(0).total_memory
        cap = need2 + (need2 - torch.cuda.memory_allocated()) * 0.5
        res["cap_gib"] = round(cap / 2**30, 3)
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
        try:
            t = time.perf_counter()
            outs = r.render(lays, list(range(b)), params, size)
            sync(device)
            res["seconds"] = round(time.perf_counter() - t, 3)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
        res["injected"] = False
    else:
        unet = r._loop.unet

        class OOMOver:  # the CPU has no CUDA allocator: raise its error above 2 scenes (4 UNet rows)
            def __getattr__(self, name):
                return getattr(unet, name)

            def __call__(self, sample, *a, **k):
                if sample.shape[0] > 4:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
                return unet(sample, *a, **k)

        r._loop.unet = OOMOver()
        t = time.perf_counter()
        outs = r.render(lays, list(range(b)), params, size)
        res["seconds"] = round(time.perf_counter() - t, 3)
        r._loop.unet = unet
        res["injected"] = True
    ok = sum(hasattr(o, "image") for o in outs)
    res.update({"scenes": b, "rendered": ok, "oom_splits": r.oom_splits,
                "batch_sizes": sorted({o.info["batch_size"] for o in outs if hasattr(o, "info")})})
    if ok != b or r.oom_splits == 0:
        raise RuntimeError(f"OOM recovery: {ok}/{b} rendered after {r.oom_splits} split(s)")
    return res


# ---------------------------------------------------------------------------- main

PARTS = (("gligen", part_gligen, "est_gligen_s"), ("annotation", part_annotation, "est_annotation_s"),
         ("trainer", part_trainer, "est_trainer_s"), ("oom", part_oom, "est_oom_s"),
         ("compile", part_compile, "est_compile_s"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="test-sized models on the CPU (the make-test check)")
    ap.add_argument("--budget-s", type=float, default=None, help="time for the whole run (default 450, tiny 240)")
    ap.add_argument("--out", default=None, help="JSON file (default $OUT/gpu.json or a temporary file)")
    ap.add_argument("--parts", default=None, help="comma-separated (default: all)")
    args = ap.parse_args(argv)

    import torch

    tiny = args.tiny
    args.device = "cpu" if tiny else "cuda"
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny on a CPU")
    if tiny:
        torch.set_num_threads(1)
    args.budget_s = args.budget_s or (240.0 if tiny else 450.0)
    args.size = 64 if tiny else 512
    args.steps = 2 if tiny else 20
    args.batches = (1, 2, 4) if tiny else (1, 4, 8, 16)
    args.bare_images = 2 if tiny else 4
    args.min_images = 4 if tiny else 16
    args.compile_batch = 1 if tiny else 4
    args.compile_backend = "eager" if tiny else "inductor"  # tiny: dynamo only (a CPU has no time for more)
    args.sam, args.clip = ("tiny", "tiny") if tiny else ("vit_h", "ViT-L-14")
    args.annotation_images = 4 if tiny else 8
    args.trainer_batch, args.trainer_steps = (2, 2) if tiny else (4, 3)
    args.oom_batch = 4 if tiny else 16
    # Estimates (s) of each part on an H200, checked against the time left before it starts.
    est = dict(est_gligen_s=60, est_gligen_batch_s=8, est_compile_s=150, est_annotation_s=90, est_trainer_s=60,
               est_oom_s=20)
    for k, v in est.items():
        setattr(args, k, v / 20 if tiny else v)

    clock = Clock(args.budget_s)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    result: dict = {"bench": "gpu", "tiny": tiny, "device": args.device,
                    "device_name": torch.cuda.get_device_name() if not tiny else "cpu",
                    "torch": torch.__version__, "budget_s": args.budget_s, "errors": {}}
    scratch: dict = {}
    wanted = set((args.parts or "gligen,annotation,trainer,oom,compile").split(","))
    out = Path(args.out) if args.out else Path(os.environ.get("OUT") or work) / "gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, fn, est_key in PARTS:
        if name not in wanted:
            continue
        left = clock.left()
        if left < getattr(args, est_key):
            result[name] = {"skipped": f"{left:.0f} s left, part needs about {getattr(args, est_key):.0f} s"}
            continue
        t = time.perf_counter()
        try:
            result[name] = fn(args, clock, work, scratch)
            result[name]["seconds"] = round(time.perf_counter() - t, 1)
        except Exception as e:  # noqa: BLE001 - one failing part must not cost the others their figures
            result["errors"][name] = f"{type(e).__name__}: {e}"
            result[name] = {"failed": True, "seconds": round(time.perf_counter() - t, 1)}
            traceback.print_exc()
        print(f"{name}: {json.dumps(result[name])}", flush=True)
        out.write_text(json.dumps(result, indent=1))  # after every part: a run cut short keeps its figures
        if name != "gligen":
            free(args.device)
    scratch.clear()
    free(args.device)
    result["total_s"] = round(time.perf_counter() - clock.t0, 1)
    out.write_text(json.dumps(result, indent=1))
    result["json_file"] = str(out)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
