"""Can Imagination-Aided Training recover what the synthetic style costs? A toy world, CPU, <= 15 minutes.

The world (trainer/data/toy.py, IAT_TOY_CATEGORIES): base classes (sky, grass, cat, table) appear in real
training images; novel classes (kite, awning) only in synthetic ones, drawn in a "synthetic" style (hues
rotated, saturated, striped; `--style-gap` scales it). Every model is tested on real-style images of all six
classes. Arms, all trained on the same real images plus synthetic images of the same layouts:

- `off`: IAT off; `oracle`: IAT off, the synthetic images drawn in the real style (what closing the style
  gap entirely would give);
- `query-1`, `query-10`, `clip-1`, `clip-10`: IAT on, MODEL.DREAMMASK.FEATURE_SOURCE query or clip,
  LAMBDA_SRA 1 or 10.

The tiny FC-CLIP's frozen CLIP is random, so its out-of-vocabulary branch only adds noise: the ensemble is
off (alpha = beta = 0) and the figures are the trained in-vocabulary classifier's. Each arm runs the same
seeds (model init and data order per seed), so arms are compared by paired differences over seeds: mean and
a 95 % t-interval. Alignment is measured directly on held-out scenes drawn in both styles with identical
layouts: per base class the cosine between the real and the synthetic prototype of the matched query
embeddings (and the same for the novel classes, which is what would have to transfer), and the held-out
accuracy of a linear probe telling real from synthetic base-class embeddings (0.5 = indistinguishable).
The decision rule is written in docs/benchmarks.md and applied here (`verdicts`).

    python bench/iat_toy.py --figure docs/figures/iat_toy_per_class.png   # 6 arms x 6 seeds, 300 iterations
    python bench/iat_toy.py --arms off,oracle --seeds 2 --style-gap 1.0      # calibration of the gap

Defaults (style gap 0.5, 300 iterations) come from the calibration in docs/benchmarks.md: with them the
oracle beats `off` clearly on the novel classes while `off` is not at zero, so IAT could move either way.

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REAL_TRAIN, TEST_NAME, SYN_ID, ORACLE_ID = "iat_toy_real_train", "iat_toy_real_test", "iat-toy-syn", "iat-toy-oracle"
ALL_ARMS = ("off", "oracle", "query-1", "query-10", "clip-1", "clip-10")
IAT_ARMS = ALL_ARMS[2:]
# Decision rule (docs/benchmarks.md, written before the run): the toy is valid when the oracle beats `off`
# by at least VALID_GAP novel mIoU with a CI above 0; an IAT arm then helps when its novel-class difference
# to `off` has a CI above 0 and its base-class difference a CI upper bound of at least -BASE_TOLERANCE.
VALID_GAP, BASE_TOLERANCE = 10.0, 2.0


def _arm(name: str) -> dict:
    if name not in ALL_ARMS:
        raise ValueError(f"unknown arm {name!r}; arms: {', '.join(ALL_ARMS)}")
    if name in ("off", "oracle"):
        return {"iat": False, "source": None, "lambda": 0.0, "synthetic": ORACLE_ID if name == "oracle" else SYN_ID}
    source, lam = name.split("-")
    return {"iat": True, "source": source, "lambda": float(lam), "synthetic": SYN_ID}


# ---------------------------------------------------------------------------------------------- data
def _categories():
    from dreammask.trainer.data.toy import IAT_TOY_CATEGORIES

    return IAT_TOY_CATEGORIES, [c[1] for c in IAT_TOY_CATEGORIES if not c[3]], [c[1] for c in IAT_TOY_CATEGORIES if c[3]]


def _write_data(root: Path, args) -> None:
    from dreammask.shared.storage import LocalObjectStore
    from dreammask.trainer.data.toy import register_toy_real_dataset, write_toy_dataset

    cats, _, _ = _categories()
    store = LocalObjectStore(root / "objects")
    base = [c for c in cats if not c[3]]
    register_toy_real_dataset(root / "real", REAL_TRAIN, args.real_images, args.size, seed=11, categories=base)
    # The same seed draws the same layouts: the oracle's images differ from the synthetic ones in style only.
    for dataset_id, gap in ((SYN_ID, args.style_gap), (ORACLE_ID, 0.0)):
        write_toy_dataset(store, dataset_id, args.synthetic_images, args.size, seed=12, is_synthetic=True,
                          categories=cats, domain="synthetic", max_things=3, style_gap=gap)
    register_toy_real_dataset(root / "real", TEST_NAME, args.test_images, args.size, seed=13, categories=cats,
                              max_things=3)


def _register(root: str) -> None:
    """Catalog entries of this process (workers re-register what the parent wrote)."""
    from dreammask.shared import keys
    from dreammask.shared.storage import LocalObjectStore
    from dreammask.trainer.data import register_synthetic
    from dreammask.trainer.data.register_coco_panoptic import register_coco_panoptic_dataset

    root = Path(root)
    for name in (REAL_TRAIN, TEST_NAME):
        base = root / "real" / keys.dataset_prefix(name)
        register_coco_panoptic_dataset(name, base / keys.COCO_PANOPTIC, base / keys.IMAGES_DIR,
                                       base / keys.PANOPTIC_DIR, replace=True)
    register_synthetic.use_store(LocalObjectStore(root / "objects"), root / "cache")


def _worker_init(root: str, threads: int) -> None:
    import torch

    # One thread per process: on a shared machine OpenMP workers spin-wait on each other.
    torch.set_num_threads(threads)
    _register(root)


def _held_out_scenes(args):
    """Scenes of all classes drawn twice, real and synthetic style, same layouts (same seed)."""
    import numpy as np

    from dreammask.trainer.data.toy import draw_scene

    cats, _, _ = _categories()
    names = {c[0]: c[1] for c in cats}
    out = {}
    for domain, gap in (("real", 0.0), ("synthetic", args.style_gap)):
        rng = np.random.default_rng(14)
        scenes = []
        for _ in range(args.probe_images):
            image, ids, segments = draw_scene(args.size, rng, cats, max_things=3, domain=domain, style_gap=gap)
            scenes.append((image, [(ids == s["id"], names[s["category_id"]]) for s in segments]))
        out[domain] = scenes
    return out


# ---------------------------------------------------------------------------------------------- one run
def _matched_embeddings(model, scenes, class_index, batch: int = 8):
    """(embeddings (N,D) normalised, class names, scene index) of every object of the scenes: the class
    embedding of the query the Hungarian matcher assigns to it (last decoder layer), as in training."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    feats, labels, scene_of = [], [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(scenes), batch):
            chunk = scenes[start:start + batch]
            inputs = [{
                "image": torch.from_numpy(img).permute(2, 0, 1).contiguous(),
                "instances": {"gt_classes": torch.tensor([class_index[n] for _, n in objs]),
                              "gt_masks": torch.from_numpy(np.stack([m for m, _ in objs]))},
            } for img, objs in chunk]
            images, _ = model._images(inputs)
            features = model.backbone(images)
            mask_features, _, multi_scale = model.pixel_decoder(features)
            out = model.predictor(multi_scale, mask_features, model._classifier_with_void(), model.num_templates)
            last = {k: v for k, v in out.items() if k != "aux_outputs"}
            targets = model._targets(inputs, images.shape[-2:])
            for b, (src, tgt) in enumerate(model.criterion.matcher(last, targets)):
                objs = chunk[b][1]
                for q, t in zip(src.tolist(), tgt.tolist(), strict=True):
                    feats.append(F.normalize(out["pred_embeds"][b, q].float(), dim=-1))
                    labels.append(objs[t][1])
                    scene_of.append(start + b)
    return torch.stack(feats), labels, scene_of


def _prototype_cosines(real, syn, classes) -> float:
    import torch.nn.functional as F

    (fr, lr, _), (fs, ls, _) = real, syn
    cos = []
    for c in classes:
        ir = [i for i, x in enumerate(lr) if x == c]
        is_ = [i for i, x in enumerate(ls) if x == c]
        if ir and is_:
            cos.append(float(F.cosine_similarity(fr[ir].mean(0), fs[is_].mean(0), dim=0)))
    return statistics.fmean(cos) if cos else float("nan")


def _probe_accuracy(real, syn, classes, steps: int = 200) -> float:
    """Held-out accuracy of a logistic-regression probe (real vs synthetic) on base-class embeddings:
    trained on the objects of the first half of the scenes, tested on the second half (both styles of a
    scene fall in the same half, so layouts never leak)."""
    import torch

    xs, ys, half = [], [], []
    n_scenes = max(max(real[2]), max(syn[2])) + 1
    for (f, lab, sc), y in ((real, 0.0), (syn, 1.0)):
        for i, c in enumerate(lab):
            if c in classes:
                xs.append(f[i])
                ys.append(y)
                half.append(sc[i] < n_scenes // 2)
    x, y, tr = torch.stack(xs), torch.tensor(ys), torch.tensor(half)
    if tr.all() or not tr.any():
        return float("nan")
    mean, std = x[tr].mean(0), x[tr].std(0).clamp(min=1e-6)
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x[tr] @ w + b, y[tr]) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (x[~tr] @ w + b) > 0
    return float((pred == y[~tr].bool()).float().mean())


def run_arm(task: dict) -> dict:
    import torch

    from dreammask.shared.storage import LocalObjectStore
    from dreammask.trainer.config import get_training_cfg
    from dreammask.trainer.engine.checkpoint import unwrap
    from dreammask.trainer.engine.train_loop import Trainer

    args, arm_name, seed = argparse.Namespace(**task["args"]), task["arm"], task["seed"]
    arm = _arm(arm_name)
    cats, base, novel = _categories()
    root = Path(task["root"])
    store = LocalObjectStore(root / "runs")
    cfg = get_training_cfg(tiny=True, overrides={
        "DATASETS.TRAIN": [REAL_TRAIN], "DATASETS.SYNTHETIC.IDS": [arm["synthetic"]],
        "DATASETS.SYNTHETIC.RATIO": 0.5, "DATASETS.TEST": [TEST_NAME],
        "SOLVER.IMS_PER_BATCH": args.batch, "SOLVER.MAX_ITER": args.iters, "SOLVER.BASE_LR": args.lr,
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1.0, "TEST.EVAL_PERIOD": args.iters,
        "SOLVER.CHECKPOINT_PERIOD": 10 ** 7, "ENGINE.LOG_PERIOD": 10, "SEED": seed, "DATALOADER.SEED": seed,
        "INPUT.IMAGE_SIZE": args.size, "INPUT.DATASET_MAPPER_NAME": "fixed",
        # the random CLIP's out-of-vocabulary opinion is noise: measure the trained classifier alone
        "MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_ALPHA": 0.0, "MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_BETA": 0.0,
        "MODEL.DREAMMASK.ENABLED": arm["iat"], "MODEL.DREAMMASK.LAMBDA_SRA": arm["lambda"] or 1.0,
        "MODEL.DREAMMASK.FEATURE_SOURCE": arm["source"] or "query",
        "MODEL.DREAMMASK.MEMORY_BANK_SIZE": args.bank_size,
    })
    cfg.freeze()
    t0 = time.perf_counter()
    trainer = Trainer(cfg, store, f"trainings/{arm_name}/s{seed}/", resume=False)
    result = trainer.train()
    seconds = time.perf_counter() - t0
    ev = result["eval"][TEST_NAME]
    per_class = {c[1]: ev.get(f"IoU-{c[1]}", float("nan")) for c in cats}
    metrics = [json.loads(x) for x in store.get_bytes(f"trainings/{arm_name}/s{seed}/metrics.jsonl").decode().splitlines()]
    # logged losses are weighted by weight_dict; L_sra is reported unweighted, comparable across lambdas
    sra = [x["loss_sra"] / (arm["lambda"] or 1.0) for x in metrics if "loss_sra" in x]

    model = unwrap(trainer.model)
    class_index = {n: i for i, n in enumerate(trainer.vocabulary.names)}
    scenes = _held_out_scenes(args)
    torch.manual_seed(0)  # the matcher samples points
    real, syn = (_matched_embeddings(model, scenes[d], class_index) for d in ("real", "synthetic"))
    return {
        "arm": arm_name, "seed": seed, "seconds": round(seconds, 1),
        "novel_mIoU": _nanmean([per_class[n] for n in novel]), "base_mIoU": _nanmean([per_class[n] for n in base]),
        "per_class": per_class,
        "mean_loss_sra": round(statistics.fmean(sra), 4) if sra else 0.0,
        "base_proto_cos": _prototype_cosines(real, syn, base),
        "novel_proto_cos": _prototype_cosines(real, syn, novel),
        "probe_acc": _probe_accuracy(real, syn, set(base)),
    }


# ---------------------------------------------------------------------------------------------- statistics
def _nanmean(xs):
    xs = [x for x in xs if x == x]
    return statistics.fmean(xs) if xs else float("nan")


def paired_ci(diffs: list[float], level: float = 0.95) -> dict:
    """Mean of paired differences with a two-sided t-interval (n - 1 degrees of freedom)."""
    from scipy import stats

    d = [x for x in diffs if x == x]
    n = len(d)
    if n == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    mean = statistics.fmean(d)
    if n == 1:
        return {"mean": mean, "lo": float("-inf"), "hi": float("inf"), "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * statistics.stdev(d) / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def verdicts(comparisons: dict) -> dict:
    """The decision rule of docs/benchmarks.md applied to the paired comparisons against `off`."""
    gap = comparisons.get("oracle", {}).get("novel_mIoU")
    valid = bool(gap) and gap["mean"] >= VALID_GAP and gap["lo"] > 0
    out = {"valid": valid, "arms": {}, "default_feature_source": "query"}
    gains = {}
    for arm in IAT_ARMS:
        c = comparisons.get(arm)
        if c is None:
            continue
        nov, base = c["novel_mIoU"], c["base_mIoU"]
        if not valid:
            v = "no conclusion (the oracle gap is not established)"
        elif nov["lo"] > 0 and base["hi"] >= -BASE_TOLERANCE:
            v = "helps"
            gains.setdefault(_arm(arm)["source"], []).append(nov["mean"])
        elif nov["lo"] > 0:
            v = "helps novel, hurts base"
        elif nov["hi"] < 0:
            v = "hurts"
        else:
            v = "no detectable effect"
        out["arms"][arm] = v
    if gains:
        out["default_feature_source"] = max(gains, key=lambda s: max(gains[s]))
    return out


def draw_figure(runs: list[dict], arms: list[str], classes: list[str], path: Path) -> None:
    """Per novel class, mean IoU over seeds of each arm (bars) with the seeds as dots."""
    from PIL import Image, ImageDraw

    colours = {"off": (150, 150, 150), "oracle": (60, 160, 80), "query-1": (120, 160, 230),
               "query-10": (40, 90, 200), "clip-1": (240, 170, 110), "clip-10": (210, 110, 30)}
    bar, gap = 28, 4
    group = len(arms) * (bar + gap) + 40
    w, h, pad = 60 + group * len(classes) + 130, 340, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    top, bottom = pad, h - pad - 20
    d.line([(pad, bottom), (w - 140, bottom)], fill="black")
    d.line([(pad, top), (pad, bottom)], fill="black")
    for v in (0, 25, 50, 75, 100):
        y = bottom - (bottom - top) * v / 100
        d.line([(pad - 4, y), (pad, y)], fill="black")
        d.text((4, y - 6), str(v), fill="black")
    d.text((pad, 8), "IoU of each novel class on real-style test images (bars: mean over seeds; dots: seeds)",
           fill="black")
    for i, name in enumerate(classes):
        x0 = pad + 20 + i * group
        for j, arm in enumerate(arms):
            vals = [r["per_class"].get(name, float("nan")) for r in runs if r["arm"] == arm]
            vals = [v for v in vals if v == v]
            mean = statistics.fmean(vals) if vals else 0.0
            x = x0 + j * (bar + gap)
            d.rectangle([x, bottom - (bottom - top) * mean / 100, x + bar, bottom], fill=colours.get(arm, (0, 0, 0)))
            for v in vals:
                y = bottom - (bottom - top) * v / 100
                d.ellipse([x + bar / 2 - 2, y - 2, x + bar / 2 + 2, y + 2], fill="black")
        d.text((x0 + group / 2 - 30, bottom + 6), name, fill="black")
    for j, arm in enumerate(arms):
        y = top + j * 18
        d.rectangle([w - 125, y, w - 113, y + 12], fill=colours.get(arm, (0, 0, 0)))
        d.text((w - 108, y), arm, fill="black")
    img.save(path)


# ---------------------------------------------------------------------------------------------- main
def _fmt_ci(c: dict) -> str:
    return f"{c['mean']:+.1f} [{c['lo']:+.1f}, {c['hi']:+.1f}]"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default=",".join(ALL_ARMS), help=f"comma-separated, of {', '.join(ALL_ARMS)}")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--style-gap", type=float, default=0.5, help="0.5 = hues rotated 30 degrees")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--bank-size", type=int, default=16)
    ap.add_argument("--real-images", type=int, default=24)
    ap.add_argument("--synthetic-images", type=int, default=24)
    ap.add_argument("--test-images", type=int, default=16)
    ap.add_argument("--probe-images", type=int, default=24, help="held-out scenes per style for alignment")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes, one thread each)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figure", default="iat_toy_per_class.png", help="'' to skip")
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for a in arms:
        try:
            _arm(a)
        except ValueError as e:
            ap.error(str(e))
    if "off" not in arms:
        ap.error("--arms needs 'off': every arm is compared with it")
    if args.seeds < 1 or args.iters < 1 or args.jobs < 1:
        ap.error("--seeds, --iters and --jobs must be at least 1")

    _, base, novel = _categories()
    start = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dreammask-iat-toy-") as tmp:
        _write_data(Path(tmp), args)
        _register(tmp)
        from dreammask.trainer.data.catalog import DatasetCatalog
        from dreammask.trainer.data.register_synthetic import synthetic_name

        for dataset_id in (SYN_ID, ORACLE_ID):  # fill the export cache once, before the workers read it
            DatasetCatalog.get(synthetic_name(dataset_id))
        # seed-major, arm order rotated per seed: load drifts fall on every arm alike
        tasks = [{"root": tmp, "args": vars(args), "arm": arms[(i + s) % len(arms)], "seed": s}
                 for s in range(args.seeds) for i in range(len(arms))]
        runs = []
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that has loaded torch
        with ProcessPoolExecutor(args.jobs, ctx, initializer=_worker_init, initargs=(tmp, args.threads)) as pool:
            for r in pool.map(run_arm, tasks):
                runs.append(r)
                print(f"seed {r['seed']} {r['arm']:>8}: novel mIoU {r['novel_mIoU']:5.1f}  base mIoU "
                      f"{r['base_mIoU']:5.1f}  " + "  ".join(f"{n} {r['per_class'][n]:5.1f}" for n in novel)
                      + f"  L_sra {r['mean_loss_sra']:.4f}  base cos {r['base_proto_cos']:.3f}  novel cos "
                      f"{r['novel_proto_cos']:.3f}  probe {r['probe_acc']:.2f}  ({r['seconds']} s)", flush=True)
    wall = time.perf_counter() - start
    if args.figure:
        draw_figure(runs, arms, novel, Path(args.figure))

    by = {(r["arm"], r["seed"]): r for r in runs}
    keys = ("novel_mIoU", "base_mIoU", "base_proto_cos", "novel_proto_cos", "probe_acc")
    means = {a: {k: round(_nanmean([by[a, s][k] for s in range(args.seeds)]), 4) for k in keys} for a in arms}
    comparisons = {
        a: {k: {m: round(v, 4) for m, v in paired_ci([by[a, s][k] - by["off", s][k] for s in range(args.seeds)]).items()}
            for k in keys}
        for a in arms if a != "off"
    }
    if "oracle" in arms:
        gap = [by["oracle", s]["novel_mIoU"] - by["off", s]["novel_mIoU"] for s in range(args.seeds)]
        for a in arms:
            if a in IAT_ARMS:  # share of the oracle's gain that the arm recovers
                gained = statistics.fmean(by[a, s]["novel_mIoU"] - by["off", s]["novel_mIoU"] for s in range(args.seeds))
                comparisons[a]["recovered_share"] = round(gained / statistics.fmean(gap), 3) if statistics.fmean(gap) else None
    decision = verdicts(comparisons)

    print(f"\nnovel / base mIoU, mean over {args.seeds} seeds; paired difference to 'off' with 95 % t-interval:")
    for a in arms:
        line = f"{a:>8}: novel {means[a]['novel_mIoU']:5.1f}  base {means[a]['base_mIoU']:5.1f}"
        if a != "off":
            c = comparisons[a]
            line += f"   Δnovel {_fmt_ci(c['novel_mIoU'])}   Δbase {_fmt_ci(c['base_mIoU'])}"
        line += (f"   base cos {means[a]['base_proto_cos']:.3f}  novel cos {means[a]['novel_proto_cos']:.3f}"
                 f"  probe {means[a]['probe_acc']:.2f}")
        if a in decision["arms"]:
            line += f"   -> {decision['arms'][a]}"
        print(line)
    print(f"valid (oracle - off >= {VALID_GAP} with CI > 0): {decision['valid']}; default feature source: "
          f"{decision['default_feature_source']}; wall {wall:.0f} s; load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")

    result = {
        "bench": "iat_toy",
        "arms": arms, "seeds": args.seeds, "iters": args.iters, "style_gap": args.style_gap, "batch": args.batch,
        "image_size": args.size, "jobs": args.jobs,
        "means": means, "vs_off": comparisons, "decision": decision,
        "per_run": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "per_class"}
                    | {"per_class": {n: round(v, 2) for n, v in r["per_class"].items()}} for r in runs],
        "figure": args.figure or None,
        "seconds": round(wall, 1),
        "load_avg_start": round(load_before[0], 2), "load_avg_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
