"""Synthesis stage: render batches of layouts to PNGs with their provenance records. Only the work is here (the
handlers of the chain's `StageDef`s); the skeleton (`shared/skeleton.py`) skips, records and forwards along the chain."""

from __future__ import annotations

import logging
import time

from dreammask.shared import keys
from dreammask.shared.backends import Failure
from dreammask.shared.plan import scene_stage_seed
from dreammask.shared.provenance import environment
from dreammask.shared.registry import get_backend
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import RenderRecord, SceneLayout
from dreammask.shared.skeleton import PartialWork, SceneResult

from .pipeline import SynthesisPipeline
from .settings import SynthesisSettings
from .writer import SceneWriter

log = logging.getLogger(__name__)


def render_work(rt: Runtime, job_id: str, todo: list[str]) -> SceneResult:
    spec = rt.tracker.spec(job_id).spec
    result = SceneResult()
    renderer = get_backend("synthesis", spec.backends.synthesis, rt.settings)
    layouts, sids = [], []
    for sid in todo:
        try:
            layouts.append(rt.store.get_model(keys.layout(job_id, sid), SceneLayout))
            sids.append(sid)
        except (KeyError, ValueError) as e:
            result.fail(sid, f"layout unreadable: {e}")
    plan = rt.tracker.plan(job_id)
    seeds = [scene_stage_seed(rt.chain, plan, sid, "synthesis") for sid in sids]
    model_info = renderer.describe()
    env = environment(renderer)  # package versions, weight hashes (hashed once per process)
    ws = SynthesisSettings.of()  # the process's: the writer pool is sized per worker
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
                    result.fail(sid, res.reason)
                    continue
                image_key = keys.image(job_id, sid)
                record = RenderRecord(
                    job_id=job_id, scene_id=sid, image_key=image_key, layout_key=keys.layout(job_id, sid),
                    width=res.image.size[0], height=res.image.size[1], backend=renderer.name, seed=seed,
                    synthesis=spec.synthesis, model=model_info, params=res.info, dropped_objects=res.dropped,
                    environment=env, origin=plan.scene(sid).origin, seconds=round(per_image, 4),
                )
                # Encoded and stored while the renderer goes on with the next batch.
                writer.submit(sid, keys.render_record(job_id, sid), record, image_key, res.image)
            t_batch = time.perf_counter()
    except BaseException as e:
        # The renderer raised: wait for what was queued (the task is not acked before its writes land),
        # count what landed, and let the task retry; it skips those scenes then.
        landed, _ = writer.finish()
        raise PartialWork(SceneResult(done=landed), e) from e
    landed, write_errors = writer.finish()
    if write_errors:
        sid, err = write_errors[0]
        log.warning("synthesis: %d scene write(s) of job %s failed, first %s: %s", len(write_errors), job_id,
                    sid, err)
        raise PartialWork(SceneResult(done=landed), err)  # the task retries; what landed is skipped then
    result.done.extend(landed)
    return result
