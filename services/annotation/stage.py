"""Annotation stage: masks and scores for batches of rendered scenes. Only the work is here; the skeleton
(`shared/skeleton.py`) skips, records and forwards along the chain."""

from __future__ import annotations

import time

from dreammask.shared import keys
from dreammask.shared.masks import CorruptImage, load_rgb
from dreammask.shared.registry import get_backend
from dreammask.shared.runtime import Runtime
from dreammask.shared.schemas import CategorySet, SceneAnnotation, SceneLayout
from dreammask.shared.skeleton import SceneResult
from dreammask.shared.storage import ObjectNotFound
from dreammask.shared.tasks import TRANSIENT_ERRORS

from .pipeline import AnnotationPipeline


def annotate_work(rt: Runtime, job_id: str, todo: list[str]) -> SceneResult:
    spec = rt.tracker.spec(job_id).spec
    result = SceneResult()
    vocabulary = rt.store.get_model(keys.categories(job_id), CategorySet).vocabulary
    pipe = AnnotationPipeline(get_backend("masks", spec.backends.masks, rt.settings),
                              get_backend("scores", spec.backends.scores, rt.settings))
    loaded = []
    for sid in todo:
        try:
            layout = rt.store.get_model(keys.layout(job_id, sid), SceneLayout)
            image = load_rgb(rt.store.get_bytes(keys.image(job_id, sid)))
        except ObjectNotFound as e:
            result.fail(sid, f"input missing: {e}")
            continue
        except CorruptImage as e:
            result.fail(sid, f"corrupt image: {e}")
            continue
        loaded.append((sid, layout, image))
    ts = time.perf_counter()
    try:
        # The whole task at once: SAM encodes the images in batches, CLIP scores all crops together.
        batched = pipe.annotate_many([x[2] for x in loaded], [x[1] for x in loaded], vocabulary) if loaded else []
    except TRANSIENT_ERRORS:
        raise  # the task retries the batch
    except Exception:  # noqa: BLE001 - find the scene at fault: one by one, each failing alone
        batched = None
    per_scene = (time.perf_counter() - ts) / max(1, len(loaded))
    for k, (sid, layout, image) in enumerate(loaded):
        if batched is not None:
            instances, seconds = batched[k], per_scene
        else:
            ts = time.perf_counter()
            try:
                instances = pipe(image, layout, vocabulary)
            except TRANSIENT_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - one scene's bad input must not sink its batch
                result.fail(sid, f"annotation failed: {type(e).__name__}: {e}")
                continue
            seconds = time.perf_counter() - ts
        ann = SceneAnnotation(
            job_id=job_id, scene_id=sid, image_key=keys.image(job_id, sid), width=image.shape[1],
            height=image.shape[0], mask_backend=pipe.masks.name, score_backend=pipe.scores.name,
            instances=instances, seconds=round(seconds, 4),
            provenance={"masks": pipe.masks.describe(), "scores": pipe.scores.describe()},
        )
        rt.store.put_json(keys.annotation(job_id, sid), ann)
        result.done.append(sid)
    return result
