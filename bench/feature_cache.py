"""Deep-feature caching (DeepCache, `DREAMMASK_GLIGEN_FEATURE_CACHE_INTERVAL`) against the exact loop, side
by side in one run: images/s, the UNet's FLOPs on a full and on a shallow pass, and the cost in the images.

One pipeline, loaded once; the same renderer settings, scenes, seeds, batch size and torch threads for every
interval; only the interval changes. Rounds alternate (1, 2, 3, 1, 2, 3, ...) and each interval's best round
counts, so load from other processes hits them alike. The images of each interval are compared with the
exact ones (interval 1): mean and largest absolute difference in grey levels and PSNR in dB.

Random weights (nothing can be downloaded): speed and FLOPs are those of trained weights, but the image
difference measures how far caching moves the images, not how good they look; with trained weights the
published figures for SD-1.5 at an interval of 3 are a small FID change, which this bench cannot check.
Run it on a real checkpoint with --model-path for that comparison.

    python bench/feature_cache.py                    # SD-1.4 GLIGEN architecture, 256 px, 10 steps, CPU
    python bench/feature_cache.py --device cuda --size 512 --steps 20 --batch 16
    python bench/feature_cache.py --tiny             # test-sized (tests/bench)
Last line: one JSON object {"bench": "feature_cache", ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "synthesis"))  # tiny_gligen
sys.path.insert(0, str(ROOT / "bench"))


def unet_flops(loop, size: int) -> dict:
    """TFLOP of one guided UNet pass per image, whole and shallow, with PyTorch's flop counter."""
    import torch
    from gpu import guided_unet_inputs
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from dreammask.services.synthesis.feature_cache import DeepFeatureCache

    args, kwargs = guided_unet_inputs(loop, size, torch.tensor(500, device=loop.device))
    cache = DeepFeatureCache(loop.unet, interval=2)  # the interval plays no part in `full` and `shallow`
    # The flop counter has no formula for the CPU's fused attention kernel; the math kernel is counted as
    # its matmuls. The shallow branch keeps the highest-resolution attention, so leaving it out would
    # understate the shallow pass.
    math = sdpa_kernel(SDPBackend.MATH) if loop.device.type == "cpu" else nullcontext()
    counts = {}
    with torch.no_grad(), math:
        for name, fn in (("full", cache.full), ("shallow", cache.shallow)):
            with FlopCounterMode(display=False) as fc:
                fn(*args, **kwargs)
            counts[name] = fc.get_total_flops() / 1e12
    return {"full_pass_tflop_per_image": round(counts["full"], 5),
            "shallow_pass_tflop_per_image": round(counts["shallow"], 5),
            "shallow_over_full": round(counts["shallow"] / counts["full"], 4)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny GLIGEN at 64 px")
    ap.add_argument("--model-path", type=Path, default=None,
                    help="a diffusers GLIGEN folder to load instead of random weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=None, help="image side (default 256, --tiny 64)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2, help="scenes per GPU batch; each round renders two batches")
    ap.add_argument("--intervals", default="1,2,3", help="feature-cache intervals; 1 (exact) is always included")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)

    import torch
    from gpu import build_gligen_pipe, layouts, make_renderer, pixel_diff, sync

    from dreammask.shared.schemas import SynthesisParams

    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or (64 if args.tiny else 256)
    intervals = sorted({1, *(int(x) for x in args.intervals.split(",") if x.strip())})
    with tempfile.TemporaryDirectory(prefix="dreammask-feature-cache-") as tmp:
        t = time.perf_counter()
        if args.model_path:
            from diffusers import StableDiffusionGLIGENPipeline

            dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
            pipe = StableDiffusionGLIGENPipeline.from_pretrained(args.model_path, torch_dtype=dtype).to(args.device)
        else:
            pipe = build_gligen_pipe(args.tiny, args.device, Path(tmp))
        build_s = time.perf_counter() - t
        renderers = {n: make_renderer(pipe, args.batch, size, warm_batch=True, gligen_feature_cache_interval=n)
                     for n in intervals}
        params = SynthesisParams(steps=args.steps, guidance_scale=7.5, gligen_scheduled_sampling_beta=0.3)
        lays = layouts(2 * args.batch, seed=5)
        best: dict[int, float] = {}
        outs: dict[int, list] = {}
        for _ in range(args.rounds):
            for n, r in renderers.items():
                sync(args.device)
                t = time.perf_counter()
                outs[n] = r.render(lays, list(range(len(lays))), params, size)
                sync(args.device)
                dt = time.perf_counter() - t
                failed = [o for o in outs[n] if not hasattr(o, "image")]
                if failed:
                    raise RuntimeError(f"interval {n}: {len(failed)} scenes failed: {failed[0]}")
                best[n] = min(best.get(n, float("inf")), dt)
        loop = renderers[1]._loop
        flops = unet_flops(loop, size)
    exact = outs[1]
    res = {"bench": "feature_cache", "model": "path" if args.model_path else ("tiny" if args.tiny else "sd14"),
           "weights": "loaded" if args.model_path else "random", "device": args.device,
           "dtype": str(loop.dtype).removeprefix("torch."), "torch_threads": torch.get_num_threads(),
           "image_size": size, "steps": args.steps, "batch": args.batch, "images": len(lays), "rounds": args.rounds,
           "scheduler": exact[0].info["scheduler"], "denoising_iterations": exact[0].info["denoising_iterations"],
           "build_s": round(build_s, 1), "unet_flops": flops, "intervals": {}}
    full, shallow = flops["full_pass_tflop_per_image"], flops["shallow_pass_tflop_per_image"]
    for n in intervals:
        info = outs[n][0].info
        passes, iters = info["full_unet_passes"], info["denoising_iterations"]
        row = {"images_per_s": round(len(lays) / best[n], 4), "speedup": round(best[1] / best[n], 3),
               "full_unet_passes": passes, "shallow_unet_passes": iters - passes,
               "unet_tflop_per_image": round(passes * full + (iters - passes) * shallow, 4)}
        if n != 1:
            row["image_diff_to_exact"] = pixel_diff(outs[n], exact)
        res["intervals"][str(n)] = row
    print(" | ".join(f"interval {n}: {v['images_per_s']} images/s ({v['speedup']}x), {v['full_unet_passes']} full "
                     f"UNet passes of {v['full_unet_passes'] + v['shallow_unet_passes']}"
                     + (f", PSNR {v['image_diff_to_exact']['psnr_db']} dB, mean |diff| "
                        f"{v['image_diff_to_exact']['mean']}" if "image_diff_to_exact" in v else "")
                     for n, v in res["intervals"].items()), file=sys.stderr)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
