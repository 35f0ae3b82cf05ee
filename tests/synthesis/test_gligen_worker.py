"""A job naming `gligen` through real worker processes and Redis queues: the synthesis worker loads the
tiny checkpoint from the models directory when its process starts, renders batches, and stores each
image with its provenance record; the stored image equals a render of the same layout and seed here."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from tiny_gligen import TINY_IMAGE_SIZE, TINY_MODEL_SUBPATH

from dreammask.shared import keys
from dreammask.shared.schemas import JobPlan, RenderRecord, SceneLayout, SynthesisParams
from dreammask.shared.seeding import SALTS, scene_seed, stage_seed

pytestmark = pytest.mark.integration

DEPLOYED = {
    "association": ["embedding"], "layout": ["prior"], "synthesis": ["preview", "gligen"],
    "masks": ["grabcut"], "scores": ["geometric"],
}
SYNTHESIS = {"steps": 2, "guidance_scale": 5.0, "gligen_scheduled_sampling_beta": 0.5, "scheduler": "ddim"}
JOB = {
    "train_categories": ["person", "car", "tree", "building", "road", "bench"],
    "num_novel": 1,
    "images_per_category": 3,
    "image_size": TINY_IMAGE_SIZE,
    "seed": 5,
    "max_objects_per_scene": 4,
    "backends": {"synthesis": "gligen"},
    "synthesis": SYNTHESIS,
}


def test_gligen_job_renders_through_the_synthesis_worker(platform, gligen_models_dir, gligen_renderer):
    env = {
        "DREAMMASK_DEPLOYED_BACKENDS": json.dumps(DEPLOYED),
        "DREAMMASK_PRELOAD_BACKENDS": json.dumps(["synthesis:gligen"]),
        "DREAMMASK_MODELS_DIR": str(gligen_models_dir),
        "DREAMMASK_GLIGEN_MODEL_PATH": TINY_MODEL_SUBPATH,
        "DREAMMASK_GLIGEN_WARMUP_IMAGE_SIZE": str(TINY_IMAGE_SIZE),
        "DREAMMASK_GLIGEN_BATCH_SIZE": "2",
        "DREAMMASK_SYNTHESIS_BATCH_SIZE": "3",
        "DREAMMASK_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",  # shared CPU cores: spinning OpenMP threads only slow the worker down
    }
    p = platform(env=env)
    job_id = p.submit(JOB)
    view = p.wait(job_id, timeout=400)
    assert view["state"] == "succeeded", (view, p.tail_logs())
    assert view["stages"]["synthesis"]["done"] == 3 and view["stages"]["synthesis"]["failed"] == 0

    revision = gligen_renderer.describe()["revision"]
    for index in range(3):
        sid = keys.scene_id(index)
        record = p.store.get_model(keys.render_record(job_id, sid), RenderRecord)
        assert record.backend == "gligen"
        # The render seed: the scene's seed from the job's plan, salted for the synthesis stage.
        assert record.seed == stage_seed(scene_seed(JOB["seed"], index), SALTS["synthesis"])
        assert record.seed == stage_seed(p.store.get_model(keys.plan(job_id), JobPlan).scene(sid).seed, 2)
        assert record.synthesis == SynthesisParams(**SYNTHESIS) and "seed" not in record.params
        assert record.model["revision"] == revision and record.model["dtype"] == "float32"
        assert record.model["model_path"].endswith(TINY_MODEL_SUBPATH)
        assert record.params["scheduler"] == "DDIMScheduler" and record.params["steps"] == 2
        assert record.params["guidance_scale"] == 5.0 and record.params["gligen_scheduled_sampling_beta"] == 0.5
        assert record.params["model_revision"] == revision
        assert (record.width, record.height) == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)

        # Reproducible: the worker's batched render equals this process rendering the scene alone.
        layout = p.store.get_model(keys.layout(job_id, sid), SceneLayout)
        stored = np.asarray(Image.open(io.BytesIO(p.store.get_bytes(record.image_key))).convert("RGB"), np.int16)
        here = gligen_renderer.render([layout], [record.seed], SynthesisParams(**SYNTHESIS), TINY_IMAGE_SIZE)[0]
        assert np.abs(np.asarray(here.image, np.int16) - stored).max() <= 1
