"""Synthesis stage: render batches of layouts to PNGs with their provenance records. Only the work is here;
the skeleton (`shared/skeleton.py`) skips, records and forwards along the chain."""

from __future__ import annotations

import time

from dreammask.shared import keys
from dreammask.shared.backends import Failure
from dreammask.shared.masks import png_bytes
from dreammask.shared.registry import get_backend
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import RenderRecord, SceneLayout
from dreammask.shared.seeding import scene_seed
from dreammask.shared.skeleton import SceneResult, run_scene_stage

from .pipeline import SynthesisPipeline


def render_scenes(rt: Runtime, job_id: str, scene_ids: list[str]) -> dict:
    return run_scene_stage(rt, "synthesis", job_id, scene_ids, render_work)


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
    seeds = [scene_seed(spec.seed, keys.scene_index(s), "synthesis") for s in sids]
    t0 = time.perf_counter()
    results = SynthesisPipeline(renderer)(layouts, seeds, spec.synthesis, spec.image_size) if sids else []
    per_image = (time.perf_counter() - t0) / max(1, len(sids))
    model_info = renderer.describe()
    for sid, seed, res in zip(sids, seeds, results):
        if isinstance(res, Failure):
            result.fail(sid, res.reason)
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
        result.done.append(sid)
    return result
