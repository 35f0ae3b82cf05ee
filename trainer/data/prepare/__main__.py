"""python -m dreammask.trainer.data.prepare <dataset> [--root DIR] [--splits val,train]"""

from __future__ import annotations

import argparse
import json
import sys

from . import ade20k, ade20k_full, cityscapes, coco, pascal_context

PREPARE = {
    "ade20k": (ade20k.prepare, ("val",)),
    "ade20k_full": (ade20k_full.prepare, ("val",)),
    "pascal_context": (pascal_context.prepare, ("val",)),
    "cityscapes": (cityscapes.prepare, ("val",)),
    "coco": (coco.prepare, ("val", "train")),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dreammask.trainer.data.prepare",
                                description="Prepare a standard dataset from its official release (docs/training.md).")
    p.add_argument("dataset", choices=sorted(PREPARE))
    p.add_argument("--root", help="datasets root (default: $DREAMMASK_DATASETS or ./datasets)")
    p.add_argument("--splits", help="comma-separated: val, train (default: what evaluation needs)")
    args = p.parse_args(argv)
    fn, default = PREPARE[args.dataset]
    splits = tuple(s.strip() for s in args.splits.split(",")) if args.splits else default
    bad = [s for s in splits if s not in ("val", "train")]
    if bad:
        p.error(f"--splits {bad}: use val and/or train")
    try:
        result = fn(args.root, splits)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"dataset": args.dataset, "splits": list(splits), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
