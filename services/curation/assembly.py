"""The one way a dataset is made, for a job (`ds-{job}`) and for each reviewed version (`ds-{job}-v{n}`):

* `export_scene`: a kept scene enters the dataset: its image, once, and each exporter's per-scene pieces
  (panoptic PNG, label map, YOLO labels...); the scene's curated record is updated with what was written;
* `assemble_dataset`: the curated records of the plan's scenes, in scene order, streamed through the
  exporters (COCO JSON arrays, parquet row groups, card aggregates...), the index files uploaded, and last
  the manifest with a SHA-256 per file and the seeds. Its memory does not grow with the job.

The job's curation step and its assemble step call these with the records the selection rules made; publishing
a version calls them with the records people's review marks changed (publish.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dreammask.shared import keys
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import CuratedScene, DatasetManifest, SceneAnnotation, SceneDecision, utcnow

from .checksums import dataset_checksums
from .exporters import ExportContext, Exporter, JsonStream, build_exporters
from .sample import build_sample
from .sample_index import SampleIndexWriter
from .selection import SelectionPolicy


def export_scene(ctx: ExportContext, exporters: list[Exporter], rec: CuratedScene, ann: SceneAnnotation,
                 decision: SceneDecision, image: np.ndarray, raw: bytes, masks: dict[int, np.ndarray],
                 policy: SelectionPolicy) -> None:
    """Write a kept scene's image and export pieces into `ctx`'s dataset; record them on `rec`."""
    by_name = {c.name: c for c in ctx.categories}
    sample = build_sample(ann, decision, image, raw, by_name, policy.metric_for,
                          novel_category=rec.novel_category, caption=rec.caption, masks=masks)
    rec.dataset_image = f"{keys.IMAGES_DIR}/{rec.scene_id}.png"
    # The image enters the dataset once, as rendered; every format points at it.
    ctx.store.put_bytes(ctx.key(rec.dataset_image), raw, "image/png")
    rec.pieces = {ex.name: ex.write_scene(ctx, sample) for ex in exporters}
    rec.instances = sample.instances


@dataclass
class Assembled:
    manifest: DatasetManifest | None  # None: no scene was curated (no dataset written)
    curated: int = 0
    kept: int = 0
    instances: int = 0


def assemble_dataset(rt: Runtime, ctx: ExportContext, record_of: Callable[[str], CuratedScene | None],
                     *, review_index: bool = False) -> Assembled:
    """Stream `record_of(scene)` for every scene of the job's plan (None: the scene failed before curation)
    through the exporters, upload the index files, then write the manifest last (it marks the dataset
    complete). `ctx.version` (a reviewed version's number, first dataset and review counts) goes into the
    selection file, the card and the manifest; `review_index` also builds the review UI's pages."""
    stored = rt.tracker.spec(ctx.job_id)
    # Every streamed file is spooled under one temporary folder, removed whatever happens.
    with tempfile.TemporaryDirectory(prefix="dm-assemble-") as spool:
        ctx.spool_dir = spool
        exporters = build_exporters(ctx.spec.export_formats)
        for ex in exporters:
            ex.start(ctx)
        decisions = JsonStream(ctx, ["scenes"])
        index = SampleIndexWriter(rt.store, ctx.job_id, ctx.categories) if review_index else None
        out = Assembled(manifest=None)
        scene_seeds: dict[str, int] = {}
        for planned in ctx.plan.scenes:
            rec = record_of(planned.scene_id)
            if rec is None:
                continue
            out.curated += 1
            if rec.kept:
                out.kept += 1
                out.instances += len(rec.instances)
                scene_seeds[planned.scene_id] = planned.seed
            decisions.add("scenes", rec.decision.model_dump())
            if index is not None:
                index.add(rec)
            for ex in exporters:
                ex.add(ctx, rec)
        if not out.curated:
            decisions.close()
            return out
        decisions.upload(ctx.key(keys.DECISIONS), {"thresholds": ctx.spec.thresholds.model_dump(),
                                                   **(ctx.version or {})})
        if index is not None:
            index.finish()  # the review UI's pages, before the job reads as done
        files = {"selection": ctx.key(keys.DECISIONS)}
        for ex in exporters:
            files.update(ex.finish(ctx))
    card = ctx.scratch.get("card", {})
    out.manifest = DatasetManifest(
        dataset_id=ctx.dataset_id, job_id=ctx.job_id, tenant=stored.tenant, created_at=utcnow(),
        categories=ctx.categories, images=out.kept, instances=out.instances, files=files,
        selection={**card.get("selection", {}), **(ctx.version or {})},
        checksums=dataset_checksums(rt.store, ctx.dataset_id),
        job_seed=ctx.plan.job_seed, scene_seeds=scene_seeds,
    )
    # The manifest is written last: its presence marks a complete dataset.
    rt.store.put_json(keys.dataset_manifest(ctx.dataset_id), out.manifest)
    return out
