"""The production loader: paths under the models directory, precision and variant choice, clear errors
for missing or wrong checkpoints, and the revision hash recorded with every image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_gligen import TINY_MODEL_SUBPATH, build_tiny_gligen

from dreammask.services.synthesis.model_loading import (
    BadCheckpoint,
    ModelNotFound,
    has_variant,
    model_revision,
    plan_load,
    resolve_device,
    resolve_dtype,
)
from dreammask.services.synthesis.settings import SynthesisSettings


def test_plan_on_cpu_is_float32_without_variant(gligen_settings):
    core, synthesis = gligen_settings
    plan = plan_load(synthesis, core.models_dir, device="cpu")
    assert plan.local and plan.device == "cpu" and plan.dtype == "float32" and plan.variant is None
    assert Path(plan.source) == (core.models_dir / TINY_MODEL_SUBPATH).resolve()
    # An absolute path is taken as it is, whatever the models dir.
    absolute = SynthesisSettings(gligen_model_path=core.models_dir / TINY_MODEL_SUBPATH)
    assert plan_load(absolute, Path("/nonexistent"), device="cpu").source == plan.source


def test_precision_follows_the_device():
    assert resolve_dtype("auto", "cuda") == "float16"
    assert resolve_dtype("auto", "cuda:1") == "float16"
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cuda") == "bfloat16"
    with pytest.raises(ValueError, match="use float32"):
        resolve_dtype("float16", "cpu")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto", "cpu") == "cpu"


def test_fp16_variant_files_are_found(tmp_path):
    folder = build_tiny_gligen(tmp_path, variant="fp16")
    assert any(".fp16." in f.name for f in (folder / "unet").iterdir())
    assert has_variant(folder, "fp16")
    assert not has_variant(folder, "bf16")


def test_missing_weights_say_where_to_mount_them(tmp_path):
    with pytest.raises(ModelNotFound, match="DREAMMASK_GLIGEN_MODEL_PATH") as err:
        plan_load(SynthesisSettings(), tmp_path, device="cpu")
    assert "gligen/diffusers-generation-text-box" in str(err.value)


def test_a_checkpoint_without_gated_attention_is_refused(gligen_models_dir, tmp_path):
    copy = tmp_path / "sd"
    shutil.copytree(gligen_models_dir / TINY_MODEL_SUBPATH, copy)
    cfg_path = copy / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["attention_type"] = "default"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(BadCheckpoint, match="attention_type 'gated'"):
        plan_load(SynthesisSettings(gligen_model_path=copy), tmp_path, device="cpu")
    shutil.rmtree(copy / "vae")
    with pytest.raises(BadCheckpoint, match="vae"):
        plan_load(SynthesisSettings(gligen_model_path=copy), tmp_path, device="cpu")


def test_revision_hash_is_stable_and_tracks_changes(gligen_models_dir, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(gligen_models_dir / TINY_MODEL_SUBPATH, copy)
    first, again = model_revision(copy), model_revision(copy)
    assert first == again and first["revision"].startswith("sha256:")
    assert model_revision(gligen_models_dir / TINY_MODEL_SUBPATH)["revision"] == first["revision"]
    sched = copy / "scheduler" / "scheduler_config.json"
    sched.write_text(sched.read_text().replace('"steps_offset": 1', '"steps_offset": 0'))
    assert model_revision(copy)["revision"] != first["revision"]
    (copy / "REVISION").write_text("7a1d41e4a4b1ed2d8e1cbac3a9a7b4d5fa9c1ab0\n")
    assert model_revision(copy)["source_revision"] == "7a1d41e4a4b1ed2d8e1cbac3a9a7b4d5fa9c1ab0"
