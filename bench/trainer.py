"""Trainer step time with IAT (memory bank + SRA loss) on against off: same architecture, same weights,
same batches, measured side by side in one run (steps alternate on/off so machine noise hits both alike).

    python bench/trainer.py                      # tiny model on CPU (no weights needed)
    python bench/trainer.py --size large --device cuda --image-size 1024 --batch 4   # ConvNeXt-L, random

The batch holds real and synthetic images from a toy dataset through the real data path (files, LSJ
mapper), half synthetic, like a DreamMask batch. Goal: IAT adds at most 3 % to the step time.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _cfg(args, weights_dir: Path):
    from dreammask.trainer.config import get_training_cfg

    # Random CLIP weights ("random:0") for both sizes: no weights can be downloaded here.
    cfg = get_training_cfg("tiny_test" if args.size == "tiny" else "dreammask_convnext_large",
                           {"MODEL.FC_CLIP.CLIP_PRETRAINED_WEIGHTS": "random:0"})
    cfg.MODEL.DEVICE = args.device
    cfg.INPUT.IMAGE_SIZE = args.image_size
    cfg.SOLVER.IMS_PER_BATCH = args.batch
    cfg.SOLVER.MAX_ITER = 10 ** 6
    return cfg


def _batches(cfg, root: Path, n: int):
    from dreammask.shared.storage import LocalObjectStore
    from dreammask.trainer.data.build import MappedDataset
    from dreammask.trainer.data.mapper import PanopticDatasetMapper
    from dreammask.trainer.data.mixing import MixedBatchSampler
    from dreammask.trainer.data.synthetic import load_synthetic_dataset
    from dreammask.trainer.data.toy import write_toy_dataset

    store = LocalObjectStore(root / "objects")
    size = max(64, cfg.INPUT.IMAGE_SIZE // 2)
    write_toy_dataset(store, "real", num_images=8, size=size, seed=1, is_synthetic=False)
    write_toy_dataset(store, "syn", num_images=8, size=size, seed=2)
    real, meta = load_synthetic_dataset(store, "real", root / "cache")
    syn, _ = load_synthetic_dataset(store, "syn", root / "cache")
    ds = MappedDataset(real + syn, PanopticDatasetMapper.from_config(cfg, is_train=True))
    sampler = MixedBatchSampler(len(real), len(syn), int(cfg.SOLVER.IMS_PER_BATCH), 0.5, seed=0)
    return [[ds[i] for i in sampler.batch(it)] for it in range(n)], meta


def _to(batch, device):
    out = []
    for x in batch:
        y = dict(x)
        y["image"] = x["image"].to(device, non_blocking=True)
        y["instances"] = {k: v.to(device, non_blocking=True) for k, v in x["instances"].items()}
        out.append(y)
    return out


def _build(cfg, iat: bool, meta, device):
    from dreammask.trainer.engine.optim import build_optimizer
    from dreammask.trainer.modeling import build_model

    c = cfg.clone()
    c.defrost()
    c.MODEL.DREAMMASK.ENABLED = iat
    torch.manual_seed(0)
    model = build_model(c).to(device)
    model.set_vocabulary(meta.classes, [True] * meta.num_classes, thing_flags=meta.isthing)
    model.train()
    return model, build_optimizer(c, model)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("tiny", "large"), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadier on shared machines)")
    args = p.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = _cfg(args, root)
        batches, meta = _batches(cfg, root, 4)
        batches = [_to(b, device) for b in batches]
        on, opt_on = _build(cfg, True, meta, device)
        off, opt_off = _build(cfg, False, meta, device)
        n_on = sum(p.numel() for p in on.trainable_parameters())
        n_off = sum(p.numel() for p in off.trainable_parameters())
        if n_on != n_off:
            raise RuntimeError(f"IAT on/off models differ in trainable parameters ({n_on} vs {n_off})")
        amp = device.type == "cuda"

        def step(model, opt, batch) -> tuple[float, dict]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                losses = model(batch)
            total = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 0.01)
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0, {k: float(v.detach()) for k, v in losses.items()}

        times = {"on": [], "off": []}
        sra = []
        for i in range(args.warmup + args.steps):
            batch = batches[i % len(batches)]
            order = (("on", on, opt_on), ("off", off, opt_off)) if i % 2 == 0 else \
                (("off", off, opt_off), ("on", on, opt_on))
            for name, model, opt in order:
                dt, losses = step(model, opt, batch)
                if i >= args.warmup:
                    times[name].append(dt)
                    if name == "on":
                        sra.append(losses.get("loss_sra", 0.0))
    med_on, med_off = statistics.median(times["on"]), statistics.median(times["off"])
    result = {
        "bench": "trainer",
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "model": args.size,
        "image_size": args.image_size,
        "batch": args.batch,
        "steps": args.steps,
        "step_ms_iat_on": round(med_on * 1000, 2),
        "step_ms_iat_off": round(med_off * 1000, 2),
        "iat_overhead": round(med_on / med_off - 1, 4),
        "goal_overhead": 0.03,
        "samples_per_s_iat_on": round(args.batch / med_on, 2),
        "samples_per_s_iat_off": round(args.batch / med_off, 2),
        "sra_active_steps": sum(1 for s in sra if s > 0),
    }
    print(f"IAT on : {result['step_ms_iat_on']:.1f} ms/step, {result['samples_per_s_iat_on']} samples/s")
    print(f"IAT off: {result['step_ms_iat_off']:.1f} ms/step, {result['samples_per_s_iat_off']} samples/s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
