"""The closed loop's toy world (docs/loop.md): a procedurally drawn world whose real data shows only base
classes, while the classes a loop targets appear only in the synthetic images it makes.

Base classes: sky, grass (stuff), cat (disc), table (box). Target classes: kite, awning, lamp, bench, ball.
They are not equally hard: kite (yellow disc), awning (magenta box) and ball (cyan disc) look like nothing
else, while lamp is a disc of nearly cat's colour and bench a box of nearly table's, so a model needs more
examples to tell those apart. That is the situation a deficit-steered allocation is for.

Three real-style datasets are registered in the trainer's catalog under fixed names, so a training request
(and a loop) can name them like any registered dataset; each is drawn once per machine, deterministically:

- `toy_world_train`: base classes only, the real training data;
- `toy_world_val`: every class, what a loop evaluates on and steers by;
- `toy_world_test`: every class, other scenes: held out (bench/loop.py reports on it).

`write_focus_dataset` draws the synthetic images of a round in the export layout: each shows one instance of
the category it was allocated to, plus base-class context, in the toy's synthetic style
(trainer/data/toy.py: hues rotated, saturated, striped). No torch here: the API checks the names.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .catalog import DatasetCatalog
from .toy import IAT_TOY_CATEGORIES

# (dataset id, name, isthing, is_novel, colour); odd ids are discs, even ids boxes (trainer/data/toy.py).
# The IAT toy's classes and three more novel ones.
LOOP_TOY_CATEGORIES = [
    *IAT_TOY_CATEGORIES,
    (7, "lamp", True, True, (205, 128, 52)),
    (8, "bench", True, True, (150, 100, 72)),
    (9, "ball", True, True, (40, 200, 210)),
]
BASE = [c[1] for c in LOOP_TOY_CATEGORIES if not c[3]]
TARGET = [c[1] for c in LOOP_TOY_CATEGORIES if c[3]]

TOY_WORLD_TRAIN, TOY_WORLD_VAL, TOY_WORLD_TEST = "toy_world_train", "toy_world_val", "toy_world_test"
# name -> (which classes, images, seed, things per scene at most)
_SPLITS = {
    TOY_WORLD_TRAIN: ("base", 24, 101, 2),
    TOY_WORLD_VAL: ("all", 24, 102, 3),
    TOY_WORLD_TEST: ("all", 32, 103, 3),
}
TOY_WORLD_DATASETS = tuple(_SPLITS)
SIZE = 64
VERSION = "v1"  # bump when the drawing changes: the files are cached per machine under this name


def categories_of(which: str) -> list[tuple]:
    return [c for c in LOOP_TOY_CATEGORIES if which == "all" or not c[3]]


def toy_world_root() -> Path:
    return Path(os.environ.get("DREAMMASK_TOY_WORLD_DIR") or Path(tempfile.gettempdir()) / "dreammask-toy-world") / VERSION


def write_split(name: str, root: str | os.PathLike | None = None) -> Path:
    """Draw a split into `root` (default: the machine's toy-world folder) unless its manifest is there; returns
    the dataset's folder. Deterministic, so processes drawing it at once write the same bytes."""
    from dreammask.shared import keys
    from dreammask.shared.storage import LocalObjectStore

    from .toy import write_toy_dataset

    which, n, seed, things = _SPLITS[name]
    base = Path(root) if root is not None else toy_world_root()
    folder = base / keys.dataset_prefix(name)
    if not (folder / "manifest.json").is_file():
        write_toy_dataset(LocalObjectStore(base), name, n, SIZE, seed, is_synthetic=False,
                          categories=categories_of(which), max_things=things)
    return folder


def _loader(name: str):
    def load():
        from dreammask.shared import keys

        from .coco_panoptic import load_coco_panoptic_json

        folder = write_split(name)
        return load_coco_panoptic_json(folder / keys.COCO_PANOPTIC, folder / keys.IMAGES_DIR,
                                       folder / keys.PANOPTIC_DIR, name=name)
    return load


def register_toy_world() -> None:
    """The three splits in the catalog (idempotent)."""
    for name in TOY_WORLD_DATASETS:
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, _loader(name))


def draw_focus_scene(size: int, rng: np.random.Generator, focus: str, categories=LOOP_TOY_CATEGORIES,
                     context_things: int = 1, domain: str = "synthetic", style_gap: float = 0.5):
    """(image, ids, segments) like `toy.draw_scene`, with one instance of `focus` drawn last (in front) and up
    to `context_things` base-class things behind it, over two stuff bands."""
    from .toy import finish_scene, paint_thing

    by_name = {c[1]: c for c in categories}
    if focus not in by_name:
        raise ValueError(f"{focus!r} is not a class of this toy world: {', '.join(by_name)}")
    stuff = [c for c in categories if not c[2]]
    base_things = [c for c in categories if c[2] and not c[3]]
    ids = np.zeros((size, size), dtype=np.int64)
    image = np.zeros((size, size, 3), dtype=np.float64)
    segments = []
    horizon = int(rng.integers(size // 3, 2 * size // 3))
    bands = (slice(0, horizon), slice(horizon, size)) if len(stuff) > 1 else (slice(0, size),)
    next_id = 1
    for (cid, _n, _t, _nv, colour), rows in zip(stuff[:2], bands):
        ids[rows] = next_id
        image[rows] = colour
        segments.append({"id": next_id, "category_id": cid, "isthing": 0})
        next_id += 1
    n_context = int(rng.integers(0, context_things + 1)) if base_things else 0
    chosen = [base_things[int(rng.integers(len(base_things)))] for _ in range(n_context)] + [by_name[focus]]
    for category in chosen:
        next_id = paint_thing(image, ids, segments, next_id, category, rng)
    return finish_scene(image, ids, segments, rng, domain, style_gap)


def write_focus_dataset(store, dataset_id: str, counts: dict[str, int], seed: int, size: int = SIZE,
                        style_gap: float = 0.5, categories=LOOP_TOY_CATEGORIES):
    """A round's synthetic dataset: `counts[c]` images focused on each target class c (in the given order),
    in the export layout, with the base classes and the counted classes as its categories (novel flagged)."""
    from .toy import write_scenes

    rng = np.random.default_rng(seed)
    scenes = [draw_focus_scene(size, rng, name, categories, style_gap=style_gap)
              for name, n in counts.items() for _ in range(int(n))]
    cats = [c for c in categories if not c[3] or c[1] in counts]
    return write_scenes(store, dataset_id, scenes, size, cats, is_synthetic=True, job_id=f"toy-{dataset_id}")


register_toy_world()
