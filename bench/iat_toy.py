"""Does Imagination-Aided Training help? A measured effect on a toy world, CPU, <= 15 minutes.

The world (trainer/data/toy.py, IAT_TOY_CATEGORIES): base classes (sky, grass, cat, table) appear in the
"real" domain (camera-like noise) and in the "synthetic" domain (shifted, saturated colours, stripes);
novel classes (kite, awning) appear only in synthetic data. The tiny FC-CLIP trains on the same real +
synthetic data (half of each batch synthetic) with IAT off and on, for several seeds, the two settings
alternated within one run so machine load hits both alike. Both are evaluated on real-domain test images
holding base and novel classes: novel-class and base-class mIoU, mean and spread over seeds, per seed.
It also draws the per-class figure (IoU of each novel class, IAT off vs on) as a PNG.

    python bench/iat_toy.py                      # 3 seeds x 2 settings, 200 iterations each
    python bench/iat_toy.py --seeds 5 --iters 400 --figure out.png

No threshold on the gain: the figure is what it is. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEST_NAME = "iat_toy_real_test"


def _prepare(root: Path, args):
    from dreammask.shared.storage import LocalObjectStore
    from dreammask.trainer.data import register_synthetic
    from dreammask.trainer.data.toy import IAT_TOY_CATEGORIES, register_toy_real_dataset, write_toy_dataset

    store = LocalObjectStore(root / "objects")
    base = [c for c in IAT_TOY_CATEGORIES if not c[3]]
    register_toy_real_dataset(root / "real", "iat_toy_real_train", args.real_images, args.size, seed=11,
                              categories=base, max_things=2)
    write_toy_dataset(store, "iat-toy-syn", args.synthetic_images, args.size, seed=12, is_synthetic=True,
                      categories=IAT_TOY_CATEGORIES, domain="synthetic", max_things=3)
    register_toy_real_dataset(root / "real", TEST_NAME, args.test_images, args.size, seed=13,
                              categories=IAT_TOY_CATEGORIES, max_things=3)
    register_synthetic.use_store(store, root / "cache")
    return store


def _run(store, args, seed: int, iat: bool, prefix: str) -> dict:
    from dreammask.trainer.config.engine import get_training_cfg
    from dreammask.trainer.engine.train_loop import Trainer

    cfg = get_training_cfg(tiny=True, overrides={
        "DATASETS.TRAIN": ["iat_toy_real_train"], "DATASETS.SYNTHETIC.IDS": ["iat-toy-syn"],
        "DATASETS.SYNTHETIC.RATIO": 0.5, "DATASETS.TEST": [TEST_NAME],
        "SOLVER.IMS_PER_BATCH": args.batch, "SOLVER.MAX_ITER": args.iters, "SOLVER.BASE_LR": args.lr,
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1.0, "TEST.EVAL_PERIOD": args.iters,
        "SOLVER.CHECKPOINT_PERIOD": 10 ** 7, "ENGINE.LOG_PERIOD": 50, "SEED": seed,
        "INPUT.IMAGE_SIZE": args.size, "INPUT.DATASET_MAPPER_NAME": "fixed", "MODEL.DREAMMASK.ENABLED": iat,
        "MODEL.DREAMMASK.LAMBDA_SRA": args.lambda_sra, "MODEL.DREAMMASK.MEMORY_BANK_SIZE": 16,
    })
    cfg.freeze()
    t0 = time.perf_counter()
    result = Trainer(cfg, store, prefix, resume=False).train()
    ev = result["eval"][TEST_NAME]
    metrics = [json.loads(x) for x in store.get_bytes(prefix + "metrics.jsonl").decode().splitlines()]
    sra = [x["loss_sra"] for x in metrics if "loss_sra" in x]
    return {
        "seed": seed, "iat": iat, "seconds": round(time.perf_counter() - t0, 1),
        "novel_mIoU": ev.get("mIoU_novel"), "base_mIoU": ev.get("mIoU_seen"), "mIoU": ev["mIoU"],
        "per_class": {k[4:]: v for k, v in ev.items() if k.startswith("IoU-")},
        "mean_loss_sra": round(statistics.fmean(sra), 4) if sra else 0.0,
    }


def _spread(xs):
    xs = [x for x in xs if x == x]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def draw_figure(runs: list[dict], novel: list[str], path: Path) -> None:
    """Grouped bars: per novel class, mean IoU over seeds with IAT off (grey) and on (blue), seeds as dots."""
    from PIL import Image, ImageDraw

    w, h, pad, bar = 120 + 160 * len(novel), 320, 40, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    top, bottom = pad, h - pad - 20
    d.line([(pad, bottom), (w - 10, bottom)], fill="black")
    d.line([(pad, top), (pad, bottom)], fill="black")
    for v in (0, 25, 50, 75, 100):
        y = bottom - (bottom - top) * v / 100
        d.line([(pad - 4, y), (pad, y)], fill="black")
        d.text((4, y - 6), str(v), fill="black")
    d.text((pad, 8), "IoU of each novel class on real-domain test images (bars: mean over seeds; dots: seeds)",
           fill="black")
    for i, name in enumerate(novel):
        x0 = pad + 30 + i * 160
        for j, (iat, colour) in enumerate(((False, (150, 150, 150)), (True, (40, 90, 200)))):
            vals = [r["per_class"].get(name, float("nan")) for r in runs if r["iat"] == iat]
            vals = [v for v in vals if v == v]
            mean = statistics.fmean(vals) if vals else 0.0
            x = x0 + j * (bar + 8)
            d.rectangle([x, bottom - (bottom - top) * mean / 100, x + bar, bottom], fill=colour)
            for v in vals:
                y = bottom - (bottom - top) * v / 100
                d.ellipse([x + bar / 2 - 3, y - 3, x + bar / 2 + 3, y + 3], fill="black")
            d.text((x + 4, bottom + 4), "on" if iat else "off", fill="black")
        d.text((x0 + 20, bottom + 16), name, fill="black")
    img.save(path)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lambda-sra", type=float, default=1.0)
    ap.add_argument("--real-images", type=int, default=24)
    ap.add_argument("--synthetic-images", type=int, default=24)
    ap.add_argument("--test-images", type=int, default=16)
    ap.add_argument("--figure", default="iat_toy_per_class.png")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")

    import torch

    from dreammask.trainer.data.toy import IAT_TOY_CATEGORIES

    # One thread: on a shared machine OpenMP workers spin-wait on each other (10x slower steps at load 10).
    torch.set_num_threads(args.threads)
    novel = [c[1] for c in IAT_TOY_CATEGORIES if c[3]]
    start = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="dreammask-iat-toy-") as tmp:
        store = _prepare(Path(tmp), args)
        for seed in range(args.seeds):
            # alternate which setting goes first, so drift in machine load falls on both alike
            for iat in ((False, True) if seed % 2 == 0 else (True, False)):
                r = _run(store, args, seed, iat, f"trainings/iat-toy/s{seed}-{'on' if iat else 'off'}/")
                runs.append(r)
                print(f"seed {seed} IAT {'on ' if iat else 'off'}: novel mIoU {r['novel_mIoU']:.1f}  base mIoU "
                      f"{r['base_mIoU']:.1f}  per novel class "
                      + ", ".join(f"{n} {r['per_class'].get(n, float('nan')):.1f}" for n in novel)
                      + f"  mean L_sra {r['mean_loss_sra']}  ({r['seconds']} s)", flush=True)
    figure = Path(args.figure)
    draw_figure(runs, novel, figure)

    summary = {}
    for iat in (False, True):
        tag = "on" if iat else "off"
        sel = [r for r in runs if r["iat"] == iat]
        for key in ("novel_mIoU", "base_mIoU"):
            m, sd = _spread([r[key] for r in sel])
            summary[f"{key}_iat_{tag}"] = round(m, 2)
            summary[f"{key}_iat_{tag}_std"] = round(sd, 2)
    gains = [on["novel_mIoU"] - off["novel_mIoU"] for off, on in zip(
        [r for r in runs if not r["iat"]], [r for r in runs if r["iat"]])]
    base_gains = [on["base_mIoU"] - off["base_mIoU"] for off, on in zip(
        [r for r in runs if not r["iat"]], [r for r in runs if r["iat"]])]
    result = {
        "bench": "iat_toy",
        "seeds": args.seeds, "iters": args.iters, "batch": args.batch, "image_size": args.size,
        **summary,
        "novel_gain": round(statistics.fmean(gains), 2),
        "novel_gain_per_seed": [round(g, 2) for g in gains],
        "base_gain": round(statistics.fmean(base_gains), 2),
        "base_gain_per_seed": [round(g, 2) for g in base_gains],
        "novel_ratio_on_off": round(summary["novel_mIoU_iat_on"] / summary["novel_mIoU_iat_off"], 3)
        if summary["novel_mIoU_iat_off"] else None,
        "figure": str(figure),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(f"novel mIoU: IAT off {summary['novel_mIoU_iat_off']:.1f} ± {summary['novel_mIoU_iat_off_std']:.1f}, "
          f"on {summary['novel_mIoU_iat_on']:.1f} ± {summary['novel_mIoU_iat_on_std']:.1f} "
          f"(ratio {result['novel_ratio_on_off']})")
    print(f"base mIoU:  IAT off {summary['base_mIoU_iat_off']:.1f} ± {summary['base_mIoU_iat_off_std']:.1f}, "
          f"on {summary['base_mIoU_iat_on']:.1f} ± {summary['base_mIoU_iat_on_std']:.1f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
