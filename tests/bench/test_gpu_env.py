"""`bench/gpu.py --check-env` (bench/gpu_env.py) names what is missing, and the stage timer of the GPU
check adds up (bench/gpu_timing.py)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_env  # noqa: E402
from gpu_timing import StageTimer  # noqa: E402


def test_this_environment_is_ready():
    report = gpu_env.check_env(ROOT)
    assert report["ok"], report["problems"]
    assert report["dreammask"]["same_as_checkout"] is True
    assert "ready" in gpu_env.format_report(report)


def test_missing_and_wrong_versions_are_named(monkeypatch):
    monkeypatch.setattr(gpu_env, "required", lambda root: ["dreammask-no-such-package>=1", "numpy<1",
                                                            "pydantic>=2", 'colorama; python_version < "3"'])
    report = gpu_env.check_env(ROOT)
    assert not report["ok"]
    assert report["missing"] == ["dreammask-no-such-package>=1"]  # the marker-excluded line is not asked for
    assert len(report["wrong_version"]) == 1 and report["wrong_version"][0].startswith("numpy<1 (installed ")
    text = gpu_env.format_report(report)
    assert "dreammask-no-such-package>=1" in text and "numpy<1" in text
    assert "make wheelhouse PYVER=3." in text and "install.sh" in text


def test_a_module_that_does_not_import_is_named():
    errors = gpu_env.check_imports(("json", "dreammask_no_such_module"))
    assert list(errors) == ["dreammask_no_such_module"]
    assert errors["dreammask_no_such_module"].startswith("ModuleNotFoundError")


def test_requirements_come_from_pyproject_core_and_gpu_extras():
    reqs = gpu_env.required(ROOT)
    names = {r.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip() for r in reqs}
    assert {"pydantic", "pydantic-settings", "pycocotools", "diffusers", "segment-anything", "open-clip-torch",
            "fvcore", "yacs", "timm", "opencv-python-headless"} <= names
    assert "pyarrow" not in names and "fastapi" not in names  # curation and api are not GPU services


def test_an_installed_dreammask_from_another_commit_is_caught(tmp_path, monkeypatch):
    installed = tmp_path / "site-packages" / "dreammask"
    for top in gpu_env.TOP_LEVEL:
        shutil.copytree(ROOT / top, installed / top, ignore=shutil.ignore_patterns("__pycache__"))
    changed = installed / "services" / "synthesis" / "gligen_loop.py"
    changed.write_text(changed.read_text() + "\n# another commit\n")

    class Spec:
        submodule_search_locations = [str(installed / "shared")]

    monkeypatch.setattr(gpu_env.importlib.util, "find_spec", lambda name: Spec())
    code = gpu_env.check_dreammask_code(ROOT)
    assert code["same_as_checkout"] is False and code["differs"] == ["services/synthesis/gligen_loop.py"]
    changed.write_text(changed.read_text().replace("\n# another commit\n", ""))
    assert gpu_env.check_dreammask_code(ROOT)["same_as_checkout"] is True


def test_stage_timer_adds_up_on_the_cpu():
    timer = StageTimer("cpu")
    t = time.perf_counter()
    with timer.host("prepare"):
        time.sleep(0.02)
    for _ in range(2):
        with timer.gpu("unet"):
            time.sleep(0.03)
    timer.copy("device_to_host", 1000)
    timer.copy("device_to_host", 24)
    wall = time.perf_counter() - t
    s = timer.summary(wall, images=2)
    assert s["device_stages"]["unet"]["calls"] == 2 and s["device_stages"]["unet"]["total_ms"] >= 60
    assert s["device_stages"]["unet"]["ms_per_image"] == pytest.approx(s["device_stages"]["unet"]["total_ms"] / 2, abs=0.01)
    assert s["host_stages"]["prepare"]["total_ms"] >= 20
    # idle = wall - busy: the host's sleep is idle time for the device
    assert s["device_idle_ms"] >= 19 and s["device_busy_ms"] + s["device_idle_ms"] == pytest.approx(s["wall_ms"], abs=0.05)
    assert s["copies"] == {"device_to_host": {"count": 2, "bytes": 1024}}
