"""A Hugging Face `datasets` export: parquet shards `hf/data/train-00000.parquet`, ... loadable with
`datasets.load_dataset("parquet", data_files=".../hf/data/*.parquet")` or `load_dataset(".../hf")`.

One row per kept image: `image` (the PNG, decoded by `datasets` as an `Image`), `scene_id`, `width`,
`height`, `novel_category`, `caption`, and `objects`: per instance its category name and id, thing flag,
novel flag, COCO box, area, score and mask (COCO RLE: `mask_counts` with `height`/`width`). The schema's
`huggingface` metadata declares these features, so `datasets` needs no guessing.

Shards are written by the assemble step with `pyarrow.parquet.ParquetWriter`, a row group every
`ROWS_PER_GROUP` rows, a new shard every `ROWS_PER_SHARD`: memory holds one row group, never the dataset."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from dreammask.shared import keys
from dreammask.shared.schemas import CuratedScene

from .base import ExportContext, Exporter

ROWS_PER_GROUP = 64
ROWS_PER_SHARD = 2000


def _value(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


FEATURES = {
    "image": {"_type": "Image"},
    "scene_id": _value("string"),
    "width": _value("int32"),
    "height": _value("int32"),
    "novel_category": _value("string"),
    "caption": _value("string"),
    "objects": {"_type": "List", "feature": {
        "category": _value("string"),
        "category_id": _value("int32"),
        "isthing": _value("bool"),
        "is_novel": _value("bool"),
        "bbox": {"_type": "List", "feature": _value("int32")},
        "area": _value("int64"),
        "score": _value("float64"),
        "mask_counts": _value("string"),
    }},
}


def arrow_schema():
    import pyarrow as pa

    obj = pa.struct([("category", pa.string()), ("category_id", pa.int32()), ("isthing", pa.bool_()),
                     ("is_novel", pa.bool_()), ("bbox", pa.list_(pa.int32())), ("area", pa.int64()),
                     ("score", pa.float64()), ("mask_counts", pa.string())])
    schema = pa.schema([
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("scene_id", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("novel_category", pa.string()), ("caption", pa.string()), ("objects", pa.list_(obj)),
    ])
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": FEATURES}})})


class HFParquetExporter(Exporter):
    name = "hf_parquet"

    def start(self, ctx: ExportContext) -> None:
        self.schema = arrow_schema()
        self.dir = tempfile.mkdtemp(prefix="dm-hf-", dir=ctx.spool_dir)
        self.rows: list[dict] = []
        self.writer = None
        self.shard = 0
        self.in_shard = 0
        self.uploaded: list[str] = []

    def add(self, ctx: ExportContext, rec: CuratedScene) -> None:
        if not rec.kept:
            return
        self.rows.append({
            "image": {"bytes": ctx.store.get_bytes(ctx.key(rec.dataset_image)), "path": rec.dataset_image},
            "scene_id": rec.scene_id, "width": rec.width, "height": rec.height,
            "novel_category": rec.novel_category, "caption": rec.caption,
            "objects": [{"category": i.category, "category_id": i.category_id, "isthing": bool(i.isthing),
                         "is_novel": i.is_novel, "bbox": i.bbox, "area": i.area, "score": i.score,
                         "mask_counts": i.segmentation.counts} for i in rec.instances],
        })
        if len(self.rows) >= ROWS_PER_GROUP:
            self._flush(ctx)

    def _flush(self, ctx: ExportContext) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        if self.writer is None:
            self.path = Path(self.dir) / f"train-{self.shard:05d}.parquet"
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
        self.in_shard += len(self.rows)
        self.rows = []
        if self.in_shard >= ROWS_PER_SHARD:
            self._close_shard(ctx)

    def _close_shard(self, ctx: ExportContext) -> None:
        if self.writer is None:
            return
        self.writer.close()
        rel = f"{keys.HF_DIR}/data/{self.path.name}"
        ctx.store.put_file(ctx.key(rel), self.path, "application/vnd.apache.parquet")
        os.unlink(self.path)
        self.uploaded.append(rel)
        self.writer = None
        self.shard += 1
        self.in_shard = 0

    def finish(self, ctx: ExportContext) -> dict[str, str]:
        self._flush(ctx)
        if not self.uploaded and self.writer is None:  # no kept image: still a valid, empty shard
            import pyarrow.parquet as pq

            self.path = Path(self.dir) / f"train-{self.shard:05d}.parquet"
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self._close_shard(ctx)
        return {"hf_parquet": ctx.prefix + keys.HF_DIR + "/"}
