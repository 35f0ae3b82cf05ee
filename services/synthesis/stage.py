"""Synthesis stage: render batches of layouts to PNGs with their provenance records; forwards to annotation."""

from __future__ import annotations

import time

from dreammask.shared import keys
from dreammask.shared.backends import Failure
from dreammask.shared.celery_app import TASK_ANNOTATE, TASK_CURATE
from dreammask.shared.masks import png_bytes
from dreammask.shared.registry import get_backend
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import RenderRecord, SceneLayout
from dreammask.shared.seeding import scene_seed

from .pipeline import SynthesisPipeline


def render_scenes(rt: Runtime, job_id: str, scene_ids: list[str]) -> dict:
    tr = rt.tracker
    if tr.is_cancelled(job_id):
        return {"skipped": "cancelled"}
    spec = tr.spec(job_id).spec
    todo, ready = tr.split_done(job_id, "synthesis", scene_ids)
    last = False
    if todo:
        renderer = get_backend("synthesis", spec.backends.synthesis, rt.settings)
        layouts, sids = [], []
        for sid in todo:
            try:
                layouts.append(rt.store.get_model(keys.layout(job_id, sid), SceneLayout))
                sids.append(sid)
            except (KeyError, ValueError) as e:
                last = tr.mark_failed(job_id, "synthesis", sid, f"layout unreadable: {e}") or last
        seeds = [scene_seed(spec.seed, keys.scene_index(s), "synthesis") for s in sids]
        t0 = time.perf_counter()
        results = SynthesisPipeline(renderer)(layouts, seeds, spec.synthesis, spec.image_size) if sids else []
        per_image = (time.perf_counter() - t0) / max(1, len(sids))
        done = []
        model_info = renderer.describe()
        for sid, seed, res in zip(sids, seeds, results):
            if isinstance(res, Failure):
                last = tr.mark_failed(job_id, "synthesis", sid, res.reason) or last
                continue
            image_key = keys.image(job_id, sid)
            record = RenderRecord(
                job_id=job_id, scene_id=sid, image_key=image_key, width=res.image.size[0],
                height=res.image.size[1], backend=renderer.name, seed=seed, model=model_info,
                params={**spec.synthesis.model_dump(), **res.info}, dropped_objects=res.dropped,
                seconds=round(per_image, 4),
            )
            # Record first, image last: the image is the idempotency marker, so a crash between the two
            # re-renders the scene rather than leaving an image without provenance.
            rt.store.put_json(keys.render_record(job_id, sid), record)
            rt.store.put_bytes(image_key, png_bytes(res.image), "image/png")
            done.append(sid)
        tr.mark_done(job_id, "synthesis", done, time.perf_counter() - t0)
        ready += done
    if last:
        rt.dispatcher.send(TASK_CURATE, job_id)
    if ready:
        ready.sort()
        size = rt.settings.annotation_batch_size
        for i in range(0, len(ready), size):
            rt.dispatcher.send(TASK_ANNOTATE, job_id, ready[i : i + size])
    return {"rendered": len(ready)}
