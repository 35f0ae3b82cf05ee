"""Does the closed loop help? Deficit-steered allocation against uniform allocation, same total image budget,
paired seeds, on the loop's toy world (trainer/data/toy_world.py). CPU, tiny FC-CLIP, <= 15 minutes quiet.

The world: real training images show only the base classes (sky, grass, cat, table); the five target classes
(kite, awning, lamp, bench, ball) appear only in synthetic images. Lamp looks almost like cat and bench almost
like table, so they need more examples than the other three. Each round's synthetic images come from the
toy's synthetic-style generator (`write_focus_dataset`: one image per allocated image, showing an instance of
its category plus base-class context), so what a round makes follows its allocation exactly. By default the
images are drawn in the real style (`--style-gap 0`): the style gap is bench/iat_toy.py's question, and at
its gap of 0.5 the calibration left three of the five target classes at IoU 0 in both arms after three
rounds, so every deficit stayed near 1, the allocation near uniform, and there was nothing to compare. The platform's preview renderer is not used here: it draws a category with a colour
hashed from its name on its own backdrop, nothing like the toy world's test images, so a model trained on
its images of "kite" would learn nothing about the toy's kites whatever the allocation (docs/loop.md).

Per seed:
- round 0: one model trained on the real images alone (shared by both arms);
- rounds 1..R, per arm: allocate the round's budget B (the loop: `shared.loops.allocate` on the previous
  round's IoU of each target class on `toy_world_val`; uniform: B split evenly), draw that many synthetic
  images, train from the previous round's checkpoint on the real images plus every synthetic dataset so far
  (the loop's own training request, `shared.loops.training_request`, run by the training service's runner
  in this process), evaluate on `toy_world_val` (what the loop steers by) and `toy_world_test` (held out:
  what is reported).
Same seed, same iterations, same budget, same data draws per (seed, round) in both arms; only the
allocation differs. Reported on the test set after round R, loop − uniform paired over seeds with 95 %
t-intervals: the mean IoU of each arm's two weakest target classes, its weakest target class's IoU, and
the mean over the target classes.

    python bench/loop.py                      # 8 seeds x 2 arms, 3 rounds of 30 images, 200 + 3 x 250 iterations
    python bench/loop.py --seeds 2 --rounds 1 --base-iters 20 --iters 10   # a quick look

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from iat_toy import paired_ci  # noqa: E402  (the same paired t-interval as the IAT bench)

ARMS = ("loop", "uniform")
VAL, TEST = "toy_world_val", "toy_world_test"
WEAKEST_K = 2


def _settings(root: Path):
    from dreammask.trainer.service.settings import TrainerSettings

    return TrainerSettings(trainer_cache_dir=root / "cache")


def _stored_loop(args, seed: int):
    """The loop spec both arms train with (the uniform arm uses its training requests, not its allocation)."""
    from dreammask.shared import loops as lp
    from dreammask.shared.schemas import utcnow
    from dreammask.trainer.data.toy_world import BASE, TARGET

    overrides = {
        "SOLVER.IMS_PER_BATCH": args.batch, "SOLVER.BASE_LR": args.lr, "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1.0,
        "SOLVER.CHECKPOINT_PERIOD": 10 ** 7, "ENGINE.LOG_PERIOD": 50, "ENGINE.STATUS_PERIOD": 50,
        "SEED": seed, "DATALOADER.SEED": seed, "INPUT.DATASET_MAPPER_NAME": "fixed",
        "DATASETS.SYNTHETIC.RATIO": 0.5,
        # the random CLIP's out-of-vocabulary opinion is noise, and IAT is another question (bench/iat_toy.py)
        "MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_ALPHA": 0.0, "MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_BETA": 0.0,
        "MODEL.DREAMMASK.ENABLED": False,
    }
    spec = lp.LoopSpec(name=f"bench seed {seed}", train_categories=BASE, target=TARGET, rounds=args.rounds,
                       images_per_round=args.budget, floor=args.floor, target_iou=args.target_iou,
                       real_datasets=["toy_world_train"],
                       eval_dataset=VAL, training={"iterations": args.iters, "base_iterations": args.base_iters,
                                                   "tiny": True, "overrides": overrides})
    return lp.StoredLoopSpec(loop_id=f"bench-s{seed}", tenant="bench", created_at=utcnow(), spec=spec,
                             train_categories=BASE)


def _train(root: Path, stored, round_no: int, datasets: list[str], weights: str | None, name: str) -> dict:
    """One round's training through the training service's runner; returns its val and test IoU per class."""
    from dreammask.shared import loops as lp
    from dreammask.shared.storage import LocalObjectStore
    from dreammask.trainer.service.record import create_training, read_status
    from dreammask.trainer.service.runner import run_training_job
    from dreammask.trainer.service.schemas import TrainingSpec

    store = LocalObjectStore(root / "objects")
    req = lp.training_request(stored, round_no, datasets, weights)
    req["eval_datasets"] = [VAL, TEST]
    tid = f"tr-{name}"
    create_training(store, "bench", TrainingSpec(**req), training_id=tid)
    t0 = time.perf_counter()
    final = run_training_job(store, tid, _settings(root))
    if final["state"] != "succeeded":
        raise RuntimeError(f"{tid}: {final['state']}: {final.get('error')}")
    latest = read_status(store, tid).latest_eval
    figures = {ds: {row["class"]: (row["IoU"] if row["IoU"] is not None else float("nan"))
                    for row in latest[ds]["classes"]} for ds in (VAL, TEST)}
    return {"training_id": tid, "seconds": round(time.perf_counter() - t0, 1), **figures}


def _worker_init(root: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)  # one thread per process: OpenMP threads of two processes spin on each other
    os.environ["DREAMMASK_TOY_WORLD_DIR"] = str(Path(root) / "toy-world")


def run_base(task: dict) -> dict:
    args, seed, root = argparse.Namespace(**task["args"]), task["seed"], Path(task["root"])
    return {"seed": seed, **_train(root, _stored_loop(args, seed), 0, [], None, f"s{seed}-base")}


def run_arm(task: dict) -> dict:
    """Rounds 1..R of one arm from the seed's shared round-0 model."""
    from dreammask.shared import loops as lp
    from dreammask.shared.seeding import derive_seed
    from dreammask.shared.storage import LocalObjectStore
    from dreammask.trainer.data.toy_world import TARGET, write_focus_dataset

    args, seed, arm, root = argparse.Namespace(**task["args"]), task["seed"], task["arm"], Path(task["root"])
    stored = _stored_loop(args, seed)
    store = LocalObjectStore(root / "objects")
    prev, datasets, rounds = task["base"], [], []
    for r in range(1, args.rounds + 1):
        if arm == "loop":
            counts = lp.allocate(args.budget, {t: lp.class_iou(prev[VAL], t) for t in TARGET}, floor=args.floor,
                                 target_iou=args.target_iou).counts
        else:
            counts = lp.uniform(args.budget, TARGET)
        ds = f"ds-s{seed}-{arm}-r{r}"
        # The same draws per (seed, round) in both arms; only the counts differ.
        write_focus_dataset(store, ds, counts, seed=derive_seed(seed, r, 7), style_gap=args.style_gap)
        datasets.append(ds)
        result = _train(root, stored, r, list(datasets), prev["training_id"], f"s{seed}-{arm}-r{r}")
        rounds.append({"round": r, "allocation": counts, **result})
        prev = result
    return {"seed": seed, "arm": arm, "rounds": rounds}


def _or(x, default: float) -> float:
    return x if x is not None and x == x else default


def _finite(obj):
    """NaN as null, so the last line is standard JSON."""
    if isinstance(obj, float):
        return obj if obj == obj else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _mean(xs) -> float:
    xs = [x for x in xs if x == x]
    return statistics.fmean(xs) if xs else float("nan")


def summarise(bases: dict[int, dict], arms: dict[tuple[int, str], dict]) -> dict:
    """Per seed and arm, the final test figures; paired loop − uniform differences with 95 % intervals."""
    from dreammask.trainer.data.toy_world import TARGET

    per = {}
    for (seed, arm), run in arms.items():
        test = run["rounds"][-1][TEST]
        # Each arm's own weakest classes on the test set (an unmeasured one counts as 0, as the allocation
        # counts it): chosen the same way in both arms, so neither is favoured by how they are picked.
        weakest = sorted(TARGET, key=lambda t: (_or(test.get(t), 0.0), TARGET.index(t)))[:WEAKEST_K]
        per[seed, arm] = {"weakest_classes": weakest, "weakest_iou": _mean(_or(test.get(t), 0.0) for t in weakest),
                          "min_iou": min((test.get(t, float("nan")) for t in TARGET), default=float("nan")),
                          "mean_iou": _mean(test.get(t) for t in TARGET),
                          "per_class": {t: test.get(t) for t in TARGET}}
    seeds = sorted(bases)
    metrics = ("weakest_iou", "min_iou", "mean_iou")
    means = {arm: {m: round(_mean(per[s, arm][m] for s in seeds), 2) for m in metrics} for arm in ARMS}
    for arm in ARMS:
        means[arm]["per_class"] = {t: round(_mean(per[s, arm]["per_class"][t] for s in seeds), 2) for t in TARGET}
    diff = {m: {k: round(v, 2) for k, v in paired_ci([per[s, "loop"][m] - per[s, "uniform"][m] for s in seeds]).items()}
            for m in metrics}
    return {"per_seed": {f"{s}/{a}": v for (s, a), v in per.items()}, "means": means, "loop_minus_uniform": diff}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=30, help="synthetic images per round (both arms)")
    ap.add_argument("--floor", type=float, default=0.05)
    ap.add_argument("--target-iou", type=float, default=None, help="the loop's target_iou (default: 100)")
    ap.add_argument("--base-iters", type=int, default=200, help="round 0: real images alone")
    ap.add_argument("--iters", type=int, default=250, help="each later round")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--style-gap", type=float, default=0.0, help="0: synthetic images in the real style (see "
                    "docs/benchmarks.md: at 0.5 the toy learned too little for the allocation to matter)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes, one thread each)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if min(args.seeds, args.rounds, args.budget, args.base_iters, args.iters, args.jobs) < 1:
        ap.error("--seeds, --rounds, --budget, --base-iters, --iters and --jobs must be at least 1")
    from dreammask.trainer.data.toy_world import TARGET

    if args.budget < len(TARGET):
        ap.error(f"--budget must give each of the {len(TARGET)} target classes one image")

    start, load_before = time.perf_counter(), os.getloadavg()
    import multiprocessing

    with tempfile.TemporaryDirectory(prefix="dreammask-loop-bench-") as tmp:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that has loaded torch
        with ProcessPoolExecutor(args.jobs, ctx, initializer=_worker_init, initargs=(tmp, args.threads)) as pool:
            common = {"root": tmp, "args": vars(args)}
            bases = {}
            for b in pool.map(run_base, [{**common, "seed": s} for s in range(args.seeds)]):
                bases[b["seed"]] = b
                print(f"seed {b['seed']} round 0: val " + "  ".join(f"{t} {b[VAL].get(t, float('nan')):5.1f}"
                                                                    for t in TARGET) + f"  ({b['seconds']} s)", flush=True)
            # seed-major, arm order alternating per seed: load drifts fall on both arms alike
            tasks = [{**common, "seed": s, "arm": ARMS[(i + s) % 2], "base": bases[s]}
                     for s in range(args.seeds) for i in range(2)]
            arms = {}
            for run in pool.map(run_arm, tasks):
                arms[run["seed"], run["arm"]] = run
                last = run["rounds"][-1]
                for x in run["rounds"]:
                    print(f"seed {run['seed']} {run['arm']:>7} round {x['round']}: "
                          + ", ".join(f"{k} {n}" for k, n in x["allocation"].items()) + "  -> val "
                          + "  ".join(f"{t} {x[VAL].get(t, float('nan')):5.1f}" for t in TARGET), flush=True)
                print(f"seed {run['seed']} {run['arm']:>7} test: "
                      + "  ".join(f"{t} {last[TEST].get(t, float('nan')):5.1f}" for t in TARGET), flush=True)
    wall = time.perf_counter() - start
    summary = summarise(bases, arms)
    d = summary["loop_minus_uniform"]
    print(f"\nafter {args.rounds} round(s) of {args.budget} images, test IoU, mean over {args.seeds} seeds:")
    for arm in ARMS:
        m = summary["means"][arm]
        print(f"{arm:>8}: weakest-{WEAKEST_K} {m['weakest_iou']:5.1f}  weakest class {m['min_iou']:5.1f}  "
              f"mean {m['mean_iou']:5.1f}  " + "  ".join(f"{t} {v:5.1f}" for t, v in m["per_class"].items()))
    for k in ("weakest_iou", "min_iou", "mean_iou"):
        print(f"loop − uniform {k}: {d[k]['mean']:+.1f} [{d[k]['lo']:+.1f}, {d[k]['hi']:+.1f}] (95 %, n={d[k]['n']})")
    print(f"wall {wall:.0f} s; load {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    result = {
        "bench": "loop", "seeds": args.seeds, "rounds": args.rounds, "budget_per_round": args.budget,
        "floor": args.floor, "target_iou": args.target_iou, "base_iters": args.base_iters, "iters": args.iters, "style_gap": args.style_gap,
        "weakest_k": WEAKEST_K, "means": summary["means"], "loop_minus_uniform": d,
        "allocations": {f"{s}/{a}": [x["allocation"] for x in arms[s, a]["rounds"]] for (s, a) in sorted(arms)},
        # per seed and arm, each round's allocation and the target classes' IoU after it (val steers, test reports)
        "rounds_detail": {f"{s}/{a}": [{"allocation": x["allocation"],
                                        "val": {t: x[VAL].get(t) for t in TARGET},
                                        "test": {t: x[TEST].get(t) for t in TARGET}} for x in arms[s, a]["rounds"]]
                          for (s, a) in sorted(arms)},
        "round0_val": {str(s): {t: bases[s][VAL].get(t) for t in TARGET} for s in bases},
        "per_seed": summary["per_seed"],
        "seconds": round(wall, 1), "load_avg_start": round(load_before[0], 2),
        "load_avg_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(_finite(result)))
    return result


if __name__ == "__main__":
    main()
