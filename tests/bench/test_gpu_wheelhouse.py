"""The offline GPU machine, rehearsed: `deploy/tools/wheelhouse.py` (`make wheelhouse`) builds the wheelhouse
for this Python from PyPI, then a fresh virtual environment that has torch and torchvision (and what they
brought) and nothing else installs it with `install.sh` (`--no-index`), keeps its torch, and passes
`bench/gpu.py --check-env`, which failed there before the install, naming what was missing."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def torch_closure() -> list[md.Distribution]:
    """torch, torchvision and every distribution they require (extras followed), as installed here."""
    from packaging.requirements import Requirement

    todo, seen, out = [("torch", set()), ("torchvision", set())], {}, []
    while todo:
        name, extras = todo.pop()
        name = canonical(name)
        if name in seen and extras <= seen[name]:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if name not in seen:
            out.append(dist)
        have = seen.setdefault(name, set())
        have |= extras
        for line in dist.requires or []:
            r = Requirement(line)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in {""} | have):
                todo.append((r.name, set(r.extras)))
    return out


def torch_only_folder(target: Path) -> Path:
    """A folder of links to torch's closure only (what a GPU machine with just torch has)."""
    target.mkdir()
    for dist in torch_closure():
        base = Path(dist.locate_file(""))
        for f in dist.files or []:
            top = Path(f).parts[0]
            if top == ".." or (target / top).exists():
                continue
            src = base / top
            if src.exists():
                (target / top).symlink_to(src)
    return target


def clean_env() -> dict:
    """No PYTHONPATH (the checkout's dreammask must not leak in) and no pip configuration (the machine's
    find-links and mirrors would offer other wheels than the wheelhouse's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def pypi_reachable() -> bool:
    import urllib.request

    try:
        urllib.request.urlopen("https://pypi.org/simple/six/", timeout=15).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_wheelhouse_installs_offline_next_to_torch_and_passes_check_env(tmp_path):
    if not pypi_reachable():
        pytest.skip("PyPI is not reachable from here: the wheelhouse is built from PyPI (CI has it)")
    wheelhouse = tmp_path / "wheelhouse"
    build = subprocess.run([sys.executable, str(ROOT / "deploy" / "tools" / "wheelhouse.py"), "--python-version",
                            PYVER, "--torch", md.version("torch"), "--out", str(wheelhouse)],
                           capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    manifest = json.loads((wheelhouse / "MANIFEST.json").read_text())
    wheels = {canonical(w.split("-")[0]) for w in manifest["wheels"]}
    assert {"dreammask", "diffusers", "transformers", "open-clip-torch", "segment-anything", "pydantic",
            "pydantic-settings", "fvcore", "iopath", "yacs", "pycocotools", "ftfy", "timm", "scipy"} <= wheels
    assert not wheels & {"torch", "torchvision", "triton"} and not any(w.startswith("nvidia-") for w in wheels)
    assert {"torch", "torchvision", "triton"} <= set(manifest["left_out_with_torch"])
    assert {"sympy", "setuptools"} <= wheels  # torch's small dependencies travel, in case the machine's differ
    assert "fvcore>=0.1.5.post20221221" in manifest["built_from_sdist"]  # fvcore publishes no wheel
    assert all(p.name.endswith(".whl") for p in wheelhouse.iterdir()
               if p.name not in ("requirements.txt", "install.sh", "MANIFEST.json"))

    venv = tmp_path / "gpu-machine"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "torch-only.pth").write_text(str(torch_only_folder(tmp_path / "torch-only")) + "\n")
    env = clean_env()
    before = subprocess.run([py, "-c", "import torch, torchvision; print(torch.__file__, torch.__version__)"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert before.returncode == 0, before.stderr[-2000:]
    torch_file, torch_version = before.stdout.split()

    check = [str(py), str(ROOT / "bench" / "gpu.py"), "--check-env"]
    missing = subprocess.run(check, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert missing.returncode == 2, missing.stdout[-2000:] + missing.stderr[-2000:]
    assert "not installed:" in missing.stderr and "diffusers==0.42.1" in missing.stderr
    assert "make wheelhouse PYVER=" in missing.stderr

    install = subprocess.run(["sh", str(wheelhouse / "install.sh")], capture_output=True, text=True,
                             env={**env, "PYTHON": str(py)}, timeout=1800)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    after = subprocess.run([py, "-c", "import torch; print(torch.__file__, torch.__version__)"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert after.stdout.split() == [torch_file, torch_version]  # the machine's torch, untouched
    assert not list(site.glob("torch-*.dist-info")) and not (site / "torch").exists()

    ready = subprocess.run(check, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert ready.returncode == 0, ready.stdout[-2000:] + ready.stderr[-3000:]
    report = json.loads(ready.stdout.strip().splitlines()[-1])["check_env"]
    assert report["ok"] and report["dreammask"]["location"].startswith(str(site))
