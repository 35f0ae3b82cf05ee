"""Synthesis stage: render batches of layouts to PNGs with their provenance records; forwards to annotation."""

from __future__ import annotations

import logging
import time
from functools import lru_cache

from dreammask.shared import keys
from dreammask.shared.backends import Failure
from dreammask.shared.celery_app import TASK_ANNOTATE, TASK_CURATE
from dreammask.shared.registry import get_backend
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import RenderRecord, SceneLayout
from dreammask.shared.seeding import scene_seed

from .pipeline import SynthesisPipeline
from .settings import SynthesisSettings
from .writer import SceneWriter

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def writer_settings() -> SynthesisSettings:
    return SynthesisSettings()


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
        model_info = renderer.describe()
        ws = writer_settings()
        writer = SceneWriter(rt.store, ws.synthesis_writer_threads,
                             ws.synthesis_writer_threads * ws.synthesis_writer_queue_per_thread)
        try:
            batches = SynthesisPipeline(renderer).batches(layouts, seeds, spec.synthesis, spec.image_size) \
                if sids else iter(())
            t_batch = time.perf_counter()
            for batch in batches:
                per_image = (time.perf_counter() - t_batch) / max(1, len(batch))
                for i, res in batch:
                    sid, seed = sids[i], seeds[i]
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
                    # Encoded and stored while the renderer goes on with the next batch.
                    writer.submit(sid, keys.render_record(job_id, sid), record, image_key, res.image)
                t_batch = time.perf_counter()
        finally:
            # Whether the renderer finished or raised: wait for what was queued, count what landed (the
            # rest is rendered again on redelivery), and only then return or raise, which acks the task.
            landed, write_errors = writer.finish()
            tr.mark_done(job_id, "synthesis", landed, time.perf_counter() - t0)
        if write_errors:
            sid, err = write_errors[0]
            log.warning("synthesis: %d scene write(s) of job %s failed, first %s: %s", len(write_errors), job_id,
                        sid, err)
            raise err  # the task retries; scenes that landed are skipped then
        ready += landed
    if last:
        rt.dispatcher.send(TASK_CURATE, job_id)
    if ready:
        ready.sort()
        size = rt.settings.annotation_batch_size
        for i in range(0, len(ready), size):
            rt.dispatcher.send(TASK_ANNOTATE, job_id, ready[i : i + size])
    return {"rendered": len(ready)}
