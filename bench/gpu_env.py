"""`bench/gpu.py --check-env`: is this machine ready for the GPU check, and if not, what is missing?

A GPU machine often has torch and torchvision and nothing else, and no network (docs/gpu-offline.md: a
wheelhouse built elsewhere installs the rest). Checked before anything runs, in this order:
  1. torch and torchvision import (they are never installed from the wheelhouse: the machine's own build
     matches its driver);
  2. every distribution pyproject.toml asks for (the core dependencies and the synthesis, annotation and
     trainer extras) is installed at a version its specifier allows;
  3. the modules bench/gpu.py and the GPU services import do import (this catches a missing dependency
     of a dependency, or a native library such as libGL);
  4. the installed `dreammask` is this checkout's code (a wheel from another commit would measure other
     code).
Needs nothing beyond the standard library and pip (whose vendored `packaging` parses requirements when
`packaging` itself is not installed).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import platform
import sys
from pathlib import Path

EXTRAS = ("synthesis", "annotation", "trainer")
# What the GPU check and the GPU workers import, beyond the distributions' own names.
MODULES = (
    "torch", "torchvision", "numpy", "PIL", "pydantic", "pydantic_settings", "diffusers", "transformers",
    "safetensors", "accelerate", "open_clip", "ftfy", "segment_anything", "cv2", "scipy", "timm", "fvcore",
    "iopath", "yacs", "pycocotools.mask", "celery", "redis", "minio",
    "dreammask.services.synthesis.backends.gligen", "dreammask.services.synthesis.compilation", "dreammask.services.synthesis.fill_compile_cache",
    "dreammask.services.annotation.backends.sam", "dreammask.services.annotation.backends.clip",
    "dreammask.trainer.modeling",
)
TOP_LEVEL = ("shared", "services", "trainer")
NEVER_FROM_WHEELHOUSE = ("torch", "torchvision")


def _requirement_class():
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a machine with torch only: pip's own copy
        from pip._vendor.packaging.requirements import Requirement
    return Requirement


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib.loads(path.read_text())


def required(root: Path) -> list[str]:
    """Requirement strings of the core and the GPU extras: from the checkout's pyproject.toml, else from
    the installed dreammask's metadata."""
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        project = _load_toml(pyproject)["project"]
        reqs = list(project.get("dependencies", []))
        for extra in EXTRAS:
            reqs += project.get("optional-dependencies", {}).get(extra, [])
        return reqs
    Requirement = _requirement_class()
    out = []
    for line in md.requires("dreammask") or []:
        r = Requirement(line)
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in EXTRAS):
            out.append(line.split(";")[0].strip())
    return out


def check_distributions(reqs: list[str]) -> tuple[list[str], list[str]]:
    Requirement = _requirement_class()
    missing, wrong = [], []
    for line in dict.fromkeys(reqs):
        r = Requirement(line)
        if r.name == "dreammask" or (r.marker is not None and not r.marker.evaluate({"extra": ""})):
            continue
        try:
            version = md.version(r.name)
        except md.PackageNotFoundError:
            missing.append(str(r))
            continue
        if r.specifier and not r.specifier.contains(version, prereleases=True):
            wrong.append(f"{r} (installed {version})")
    return missing, wrong


def check_imports(modules=MODULES) -> dict[str, str]:
    errors = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure to import is what this check reports
            errors[name] = f"{type(e).__name__}: {e}"[:300]
    return errors


def check_dreammask_code(root: Path) -> dict:
    """Where `dreammask` is imported from, and whether its files are this checkout's."""
    try:
        spec = importlib.util.find_spec("dreammask.shared")
    except ModuleNotFoundError:  # no `dreammask` at all
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return {"installed": False, "same_as_checkout": False, "differs": []}
    installed = Path(list(spec.submodule_search_locations)[0]).resolve().parent
    if (installed / "shared").resolve() == (root / "shared").resolve():
        return {"installed": True, "location": str(installed), "same_as_checkout": True, "differs": []}
    differs = []
    for top in TOP_LEVEL:
        for f in sorted((root / top).rglob("*.py")):
            if "__pycache__" in f.parts:
                continue
            rel = f.relative_to(root)
            other = installed / rel
            if not other.is_file() or other.read_bytes() != f.read_bytes():
                differs.append(str(rel))
    return {"installed": True, "location": str(installed), "same_as_checkout": not differs, "differs": differs}


def check_env(root: Path) -> dict:
    root = Path(root)
    report: dict = {"python": platform.python_version(), "executable": sys.executable, "problems": []}
    versions = {}
    for name in ("torch", "torchvision", "diffusers", "transformers", "open_clip_torch", "segment_anything",
                 "triton"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    report["versions"] = versions
    torch_missing = [n for n in NEVER_FROM_WHEELHOUSE if versions.get(n) is None]
    if torch_missing:
        report["problems"].append(
            f"{' and '.join(torch_missing)} not installed: install the machine's torch build first (a pinned "
            "torch/torchvision pair matching its CUDA driver); the wheelhouse holds everything else")
    missing, wrong = check_distributions(required(root))
    report["missing"], report["wrong_version"] = missing, wrong
    if missing:
        report["problems"].append(f"not installed: {', '.join(missing)}")
    if wrong:
        report["problems"].append(f"wrong version: {', '.join(wrong)}")
    report["import_errors"] = check_imports() if not torch_missing else {}
    for name, err in report["import_errors"].items():
        report["problems"].append(f"import {name} fails: {err}")
    code = check_dreammask_code(root)
    report["dreammask"] = code
    if not code["installed"]:
        report["problems"].append("dreammask is not installed (the wheelhouse holds its wheel)")
    elif not code["same_as_checkout"]:
        report["problems"].append(
            f"the installed dreammask ({code['location']}) is not this checkout's code: {len(code['differs'])} "
            f"file(s) differ, e.g. {', '.join(code['differs'][:3])}; install this checkout's wheel "
            "(`make wheelhouse` here, or `python -m pip install --no-deps .`)")
    report["ok"] = not report["problems"]
    return report


def format_report(report: dict) -> str:
    if report["ok"]:
        v = report["versions"]
        return (f"check-env: ready (Python {report['python']}, torch {v['torch']}, diffusers {v['diffusers']}, "
                f"transformers {v['transformers']}; dreammask from {report['dreammask']['location']})")
    lines = ["check-env: this machine is not ready for bench/gpu.py:"]
    lines += [f"  - {p}" for p in report["problems"]]
    lines.append("Offline machines: build a wheelhouse where PyPI is reachable (`make wheelhouse PYVER="
                 f"{'.'.join(report['python'].split('.')[:2])}`), copy it over and run `sh wheelhouse/install.sh` "
                 "(docs/gpu-offline.md).")
    return "\n".join(lines)
