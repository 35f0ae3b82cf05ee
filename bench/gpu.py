"""The GPU check: one prepared script for a short loan of one large GPU (<= 8 minutes on an H200).

With randomly initialised full-size models (no weights can be downloaded), in one run:
  1. ``gligen``: GLIGEN (SD-1.4 architecture) at 512 px, fp16, 20 steps: bare diffusers
     (`StableDiffusionGLIGENPipeline.__call__`, batch 1) against our renderer at batch 1/4/8/16 on the same
     weights and quality settings (images/s, peak memory);
  2. ``annotation``: SAM vit_h + CLIP ViT-L-14: whole annotation of a task against SAM's encoder alone
     (ratio) and encoder images/s at batch 1/4/8; the encoder with segment-anything's own attention
     against the fused (SDPA) default at the task's batch (time, peak memory);
  3. ``trainer``: the training smoke through the trainer's own loop: FC-CLIP ConvNeXt-L at 1024 px, IAT on,
     100 iterations on mixed real + synthetic toy data (does the loss fall, step time, peak memory), then the
     evaluation-only path on 8 images from the checkpoint it wrote;
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
    import torch
    from annotation import VOCABULARY, build_clip_backend, build_sam_backend, scene

    device = args.device
    sam = build_sam_backend(args.sam, device)
    clip = build_clip_backend(args.clip, device, work)
    rng = np.random.default_rng(0)
    side = 128 if args.tiny else 1024
    images, boxes = zip(*[scene(rng, side, 8) for _ in range(args.annotation_images)], strict=True)
    targets = [VOCABULARY[i % len(VOCABULARY)] for i in range(8)]
    clip.text_embeddings(tuple(VOCABULARY))
    sam.encoder_batch_size = args.annotation_images

    def encoder_only(b: int) -> float:
        with torch.inference_mode(), sam._autocast():
            sync(device)
            t = time.perf_counter()
            for i in range(0, len(images), b):
                sam._encode(list(images[i : i + b]))
            sync(device)
            return time.perf_counter() - t

    def whole() -> float:
        sync(device)
        t = time.perf_counter()
        masks = sam.segment_many(list(images), list(boxes))
        clip.score_many([(img, [m.mask for m in ms], bx, targets)
                         for img, ms, bx in zip(images, masks, boxes, strict=True)], VOCABULARY)
        sync(device)
        return time.perf_counter() - t

    whole()  # warm
    enc_by_batch = {}
    for b in (1, 4, 8):
        if b > len(images):
            continue
        encoder_only(b)
        enc_by_batch[str(b)] = round(len(images) / min(encoder_only(b) for _ in range(2)), 3)
    enc = min(encoder_only(args.annotation_images) for _ in range(2))
    tot = min(whole() for _ in range(2))
    # segment-anything's own attention at the same batch, against the fused (SDPA) default
    from dreammask.services.annotation.backends.sam_attention import use_sdpa, use_stock

    use_stock(sam.model.image_encoder)
    reset_peak(device)
    encoder_only(args.annotation_images)
    enc_stock = min(encoder_only(args.annotation_images) for _ in range(2))
    stock_peak = peak_gib(device)
    use_sdpa(sam.model.image_encoder)
    reset_peak(device)
    encoder_only(args.annotation_images)
    sdpa_peak = peak_gib(device)
    res = {"sam": args.sam, "clip": args.clip, "images": len(images), "boxes_per_image": 8, "image_size": side,
           "encoder_images_per_s_by_batch": enc_by_batch, "encoder_s": round(enc, 4), "whole_s": round(tot, 4),
           "whole_to_encoder_ratio": round(tot / enc, 4), "goal_ratio": GOAL_ANNOTATION_RATIO,
           "decoder_boxes_per_call": sam.decoder_chunk(),
           "encoder_stock_attention_s": round(enc_stock, 4), "encoder_sdpa_speedup": round(enc_stock / enc, 3),
           "encoder_peak_gib_stock": stock_peak, "encoder_peak_gib_sdpa": sdpa_peak}
    free(device)
    return res


# ---------------------------------------------------------------------------- 3. trainer

def part_trainer(args, clock: Clock, work: Path, out: dict) -> dict:
    """The training smoke through the trainer's own loop: FC-CLIP ConvNeXt-L (random CLIP weights) at 1024 px,
    IAT on, AMP as configured, on toy data mixed real + synthetic (novel classes synthetic only), 100
    iterations: does the loss fall, step time, peak memory; then the evaluation-only path on 8 images from
    the checkpoint it wrote. --tiny: the tiny preset, 6 iterations at 64 px on the CPU."""

    from dreammask.shared.storage import LocalObjectStore
    from dreammask.trainer.config import get_training_cfg
    from dreammask.trainer.data import register_synthetic
    from dreammask.trainer.data.toy import IAT_TOY_CATEGORIES, register_toy_real_dataset, write_toy_dataset
    from dreammask.trainer.engine.evaluate import evaluation_only
    from dreammask.trainer.engine.launch import train

    device = args.device
    tiny = args.tiny
    iters, side, batch, eval_images = (6, 64, 2, 8) if tiny else (100, 1024, 4, 8)
    base = [c for c in IAT_TOY_CATEGORIES if not c[3]]
    real = register_toy_real_dataset(work / "toy-real", "gpu_toy_real", num_images=8, size=side, seed=1,
                                     categories=base, max_things=3)
    evaluate_on = register_toy_real_dataset(work / "toy-eval", "gpu_toy_eval", num_images=eval_images, size=side,
                                            seed=2, categories=base, max_things=3)
    data = LocalObjectStore(work / "toy-synthetic")
    write_toy_dataset(data, "ds-gpu-toy", num_images=8, size=side, seed=3, categories=IAT_TOY_CATEGORIES,
                      domain="synthetic", max_things=3)
    overrides = {
        "MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS": "random:0", "MODEL.DEVICE": device,
        "MODEL.DREAMMASK.ENABLED": True, "DATASETS.TRAIN": [real], "DATASETS.SYNTHETIC.IDS": ["ds-gpu-toy"],
        "DATASETS.SYNTHETIC.RATIO": 0.5, "DATASETS.TEST": [evaluate_on], "INPUT.IMAGE_SIZE": side,
        "SOLVER.IMS_PER_BATCH": batch, "SOLVER.MAX_ITER": iters, "SOLVER.CHECKPOINT_PERIOD": iters,
        "ENGINE.LOG_PERIOD": 1, "ENGINE.STATUS_PERIOD": iters, "TEST.EVAL_PERIOD": 0, "SEED": 0,
        "DATALOADER.NUM_WORKERS": 0 if tiny else 4,
    }
    cfg = get_training_cfg("tiny_test" if tiny else "dreammask_convnext_large", overrides)
    runs = LocalObjectStore(work / "runs")
    reset_peak(device)
    t0 = time.perf_counter()
    result = train(cfg, runs, "smoke/", data_store=data, cache_dir=work / "cache")
    sync(device)
    train_s = time.perf_counter() - t0
    train_peak = peak_gib(device)
    lines = [json.loads(x) for x in (work / "runs" / "smoke" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [x for x in lines if "total_loss" in x]
    losses = [float(x["total_loss"]) for x in steps]
    if len(losses) != iters or not all(np.isfinite(losses)):
        raise RuntimeError(f"{len(losses)} logged steps of {iters}, losses {losses[:5]} ...")
    k = max(1, iters // 10)
    first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    # Wall time between consecutive logged iterations (every step logs, so each includes the host sync of
    # its losses): the step as the loop runs it, data loading included; the first steps warm up.
    times = [float(x["time"]) for x in steps]
    gaps = np.diff(times[min(5, len(times) - 2):]) if len(times) > 2 else np.array([train_s / iters])
    res = {"model": "tiny" if tiny else "convnext_large", "image_size": side, "batch": batch, "iterations": iters,
           "amp": bool(cfg.SOLVER.AMP.ENABLED) and device.startswith("cuda"), "iat": True,
           "real_images": result["real_images"], "synthetic_images": result["synthetic_images"],
           "loss_first": round(first, 4), "loss_last": round(last, 4), "loss_falls": last < first,
           "loss_sra_nonzero_steps": sum(1 for x in steps if float(x.get("loss_sra", 0.0)) > 0),
           "losses": sorted(k_ for k_ in steps[-1] if k_.startswith("loss") and "_" in k_ and not k_[-1].isdigit()),
           "iter_ms_median": round(1000 * float(np.median(gaps)), 2),
           "samples_per_s": round(batch / float(np.median(gaps)), 2) if float(np.median(gaps)) > 0 else None,
           "train_s": round(train_s, 1), "peak_gib_train": train_peak}
    # Evaluation only: the checkpoint just written, scored on 8 images, in fp32.
    checkpoint = work / "runs" / result["checkpoint"]
    eval_cfg = get_training_cfg("tiny_test" if tiny else "dreammask_convnext_large",
                                {**overrides, "MODEL.WEIGHTS": str(checkpoint)})
    free(device)
    reset_peak(device)
    register_synthetic.use_store(data, work / "cache")
    t0 = time.perf_counter()
    evaluation = evaluation_only(eval_cfg, LocalObjectStore(work / "eval"), "smoke/")
    sync(device)
    figures = evaluation["datasets"][evaluate_on]["metrics"]
    res["eval"] = {"images": int(figures["eval_images"]), "seconds": round(time.perf_counter() - t0, 2),
                   "mIoU": figures["mIoU"], "PQ": figures["PQ"], "weights": evaluation["weights_report"]["summary"],
                   "peak_gib": peak_gib(device)}
    if res["eval"]["images"] != eval_images:
        raise RuntimeError(f"evaluation read {res['eval']['images']} images, not {eval_images}")
    free(device)
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
    est = dict(est_gligen_s=60, est_gligen_batch_s=8, est_compile_s=150, est_annotation_s=40, est_trainer_s=150,
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
