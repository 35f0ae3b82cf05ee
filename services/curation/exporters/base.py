"""The exporter interface, and a writer that streams a JSON document with large arrays to a local spool
file before one upload: no exporter holds a whole dataset in memory.

An exporter takes part twice:
  * per scene, at curation time (`write_scene`): it writes the scene's pieces of its format (a panoptic
    PNG, a YOLO label file...) from the in-memory `Sample`, and returns their dataset-relative paths;
  * per job, in the assemble step: `start`, then `add` for every curated scene record in scene order
    (kept or not: the card counts dropped scenes too), then `finish`, which writes the format's index files
    and returns {role: object key} for the dataset manifest.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dreammask.shared import keys
from dreammask.shared.schemas import CuratedScene, DatasetCategory
from dreammask.shared.storage import ObjectStore

from ..sample import Sample


@dataclass
class ExportContext:
    store: ObjectStore
    job_id: str
    dataset_id: str
    categories: list[DatasetCategory]
    spec: Any = None  # the job's JobSpec
    plan: Any = None  # the job's JobPlan (its scenes and their seeds)
    version: dict[str, Any] | None = None  # a reviewed version: its number, first dataset, review counts
    spool_dir: str | None = None  # where streamed files are built before upload (a temp dir if None)
    scratch: dict[str, Any] = field(default_factory=dict)

    def key(self, relative: str) -> str:
        return keys.dataset_file(self.dataset_id, relative)

    @property
    def prefix(self) -> str:
        return keys.dataset_prefix(self.dataset_id)

    def image_id(self, scene_id: str) -> int:
        # Stable across re-runs and dataset versions: derived from the scene, not from a running count.
        return keys.scene_index(scene_id) + 1


class Exporter:
    name: ClassVar[str] = ""

    def write_scene(self, ctx: ExportContext, sample: Sample) -> list[str]:
        return []

    def start(self, ctx: ExportContext) -> None:
        pass

    def add(self, ctx: ExportContext, record: CuratedScene) -> None:
        pass

    def finish(self, ctx: ExportContext) -> dict[str, str]:
        return {}


class JsonStream:
    """Builds `{"head": ..., "<array>": [items...], ...}` on disk, one item at a time, then uploads it.

    Each array has its own spool file (COCO interleaves images and annotations while scenes stream in);
    `upload` concatenates them into the final document in the given order."""

    def __init__(self, ctx: ExportContext, arrays: list[str]):
        self.ctx = ctx
        self.dir = tempfile.mkdtemp(prefix="dm-export-", dir=ctx.spool_dir)
        self.arrays = arrays
        self.files = {a: open(Path(self.dir) / f"{a}.part", "w", encoding="utf-8") for a in arrays}
        self.counts = dict.fromkeys(arrays, 0)

    def add(self, array: str, item: dict) -> None:
        f = self.files[array]
        if self.counts[array]:
            f.write(",")
        f.write(json.dumps(item, separators=(",", ":"), default=str))
        self.counts[array] += 1

    def upload(self, key: str, head: dict, tail: dict | None = None) -> None:
        out_path = Path(self.dir) / "out.json"
        members = [json.dumps(k) + ":" + json.dumps(v, separators=(",", ":"), default=str) for k, v in head.items()]
        with open(out_path, "w", encoding="utf-8") as out:
            out.write("{" + ",".join(members))
            sep = "," if members else ""
            for a in self.arrays:
                self.files[a].close()
                out.write(sep + json.dumps(a) + ":[")
                sep = ","
                with open(self.files[a].name, encoding="utf-8") as part:
                    while chunk := part.read(1 << 20):
                        out.write(chunk)
                out.write("]")
            for k, v in (tail or {}).items():
                out.write(sep + json.dumps(k) + ":" + json.dumps(v, separators=(",", ":"), default=str))
            out.write("}")
        self.ctx.store.put_file(key, out_path, "application/json")
        self.close()

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)
