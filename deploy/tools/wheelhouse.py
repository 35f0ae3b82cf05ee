"""Build a wheelhouse for GPU machines without network: everything `bench/gpu.py` and the GPU services
(synthesis, annotation, trainer) need beyond torch and torchvision, as wheels for one Python version on
manylinux x86-64, plus this checkout's dreammask wheel and an offline installer.

    python deploy/tools/wheelhouse.py --python-version 3.12 --out wheelhouse      # `make wheelhouse PYVER=3.12`

How (docs/gpu-offline.md):
  1. the dreammask wheel is built from this checkout (`pip wheel --no-deps .`);
  2. pip resolves `dreammask[synthesis,annotation,trainer]` for the target (`pip install --dry-run --report`
     with --platform/--python-version/--abi and --only-binary=:all:, metadata only). A dependency
     published only as an sdist (fvcore) is built into a wheel here first (`pip wheel --no-deps`) and
     offered to the resolver through --find-links; one that is not pure Python stops the build with a
     message, since a wheel built here would not fit the target's Python;
  3. torch and torchvision are not downloaded, nor the parts of their build that the machine has with
     them (triton, the nvidia-* and cuda-* CUDA libraries); their small dependencies (sympy, networkx,
     setuptools, ...) are, so pip can satisfy torch's requirements offline where the machine's differ.
     `--torch VERSION` resolves for the machine's torch (default: the newest the index offers);
  4. the rest is downloaded (`pip download --no-deps --only-binary=:all:` at the resolved versions);
  5. `requirements.txt`, `install.sh` (the offline one-liner: pins torch and torchvision to the installed
     ones so pip can never replace them) and `MANIFEST.json` (what, for which target, what was left out)
     are written next to the wheels.
Needs Python >= 3.10 with pip, and PyPI (or a mirror pip is configured for).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("synthesis", "annotation", "trainer")
# The machine's own build (it matches the driver); never downloaded, never replaced. With them, the
# libraries of that build.
PROVIDED = ("torch", "torchvision")
BUILD_LIBRARIES = re.compile(r"^(triton|nvidia-.*|cuda-.*|pytorch-triton.*)$")
INSTALL_SH = """#!/bin/sh
# Installs DreamMask's GPU dependencies from this folder, offline, next to the torch already installed.
#   sh install.sh                      (PYTHON=/path/to/python sh install.sh for another interpreter)
# torch and torchvision are pinned to the installed versions: pip keeps them, and fails (instead of
# replacing them) if a wheel here needed other versions.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
TORCH=$("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))') || {
  echo "install.sh: torch is not installed for $PY; install the machine's torch and torchvision first" >&2; exit 1; }
TV=$("$PY" -c 'import importlib.metadata as m; print(m.version("torchvision"))') || {
  echo "install.sh: torchvision is not installed for $PY; install it with torch first" >&2; exit 1; }
"$PY" -m pip install --no-index --find-links "$HERE" "torch==$TORCH" "torchvision==$TV" -r "$HERE/requirements.txt"
echo "install.sh: done; check with: $PY bench/gpu.py --check-env"
"""


def _packaging():
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:
        from pip._vendor.packaging.markers import default_environment
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name
    return Requirement, canonicalize_name, default_environment


def target_args(pyver: str, glibc: str) -> list[str]:
    major, minor = pyver.split(".")[:2]
    g_major, g_minor = (int(x) for x in glibc.split("."))
    plats = [f"manylinux_{g_major}_{m}_x86_64" for m in range(g_minor, 16, -1)]
    plats += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    args = ["--only-binary=:all:", "--python-version", f"{major}.{minor}", "--implementation", "cp",
            "--abi", f"cp{major}{minor}"]
    for p in plats:
        args += ["--platform", p]
    return args


def pip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"wheelhouse: `{' '.join(cmd)}` failed:\n{proc.stderr[-4000:]}")
    return proc


def build_own_wheel(out: Path) -> Path:
    before = set(out.glob("dreammask-*.whl"))
    for old in before:
        old.unlink()
    pip("wheel", "--no-deps", "-q", "-w", str(out), str(ROOT))
    wheels = list(out.glob("dreammask-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"wheelhouse: expected one dreammask wheel in {out}, found {wheels}")
    return wheels[0]


def resolve(roots: list[str], out: Path, pyver: str, glibc: str, built: list[str]) -> dict:
    """The resolver's report for the target; sdist-only dependencies are built into wheels on the way."""
    for _ in range(20):
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            proc = pip("install", "--dry-run", "--ignore-installed", "-q", "--report", str(report),
                       "--find-links", str(out), *target_args(pyver, glibc), *roots, check=False)
            if proc.returncode == 0:
                return json.loads(report.read_text())
        m = re.search(r"No matching distribution found for (\S+)", proc.stderr)
        if not m:
            raise SystemExit(f"wheelhouse: resolving {roots} for Python {pyver} failed:\n{proc.stderr[-4000:]}")
        spec = m.group(1)
        if spec in built:
            raise SystemExit(f"wheelhouse: {spec} still unresolvable after building its wheel:\n{proc.stderr[-2000:]}")
        build_sdist_wheel(spec, out)
        built.append(spec)
    raise SystemExit("wheelhouse: too many packages without wheels")


def build_sdist_wheel(spec: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pip("wheel", "--no-deps", "-q", "-w", tmp, spec)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SystemExit(f"wheelhouse: building {spec} gave {wheels}")
        w = wheels[0]
        if not w.name.endswith("-none-any.whl"):
            raise SystemExit(f"wheelhouse: {spec} has no wheel on the index and is not pure Python ({w.name}); "
                             "build its wheel on a machine with the target Python and put it in the wheelhouse")
        shutil.copy(w, out / w.name)
        print(f"wheelhouse: {spec} has only a source distribution; built {w.name}", flush=True)


def walk(report: dict, pyver: str, extras: tuple[str, ...]) -> tuple[dict[str, dict], list[str]]:
    """(kept items by name, left-out names): what dreammask needs, torch's small dependencies included,
    without torch, torchvision and their build's libraries."""
    Requirement, canonicalize_name, default_environment = _packaging()
    env = default_environment()
    env.update(python_version=pyver, python_full_version=f"{pyver}.0", implementation_name="cpython",
               platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux",
               platform_machine="x86_64", os_name="posix")
    items = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}
    seen: dict[str, set[str]] = {}  # name -> the extras it was entered with
    todo = [("dreammask", set(extras))]
    while todo:
        name, want = todo.pop()
        if name not in items or (name in seen and want <= seen[name]):
            continue
        have = seen.setdefault(name, set())
        have |= want
        for line in items[name]["metadata"].get("requires_dist") or []:
            r = Requirement(line)
            if r.marker is not None and not any(r.marker.evaluate({**env, "extra": e}) for e in {""} | have):
                continue
            todo.append((canonicalize_name(r.name), set(r.extras)))
    kept = {n: items[n] for n in seen if n not in PROVIDED and not BUILD_LIBRARIES.match(n)}
    left_out = sorted(set(items) - set(kept))
    return kept, left_out


def normal_version(v: str) -> str:
    try:
        from packaging.version import Version
    except ImportError:
        from pip._vendor.packaging.version import Version
    return str(Version(v))


def wheel_id(path: Path) -> tuple[str, str]:
    _, canonicalize_name, _ = _packaging()
    name, version = path.name.split("-")[:2]
    return canonicalize_name(name), normal_version(version)


def wheel_ids(out: Path) -> set[tuple[str, str]]:
    return {wheel_id(p) for p in out.glob("*.whl")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python-version", required=True, help="the GPU machine's Python, e.g. 3.12")
    ap.add_argument("--out", default="wheelhouse", help="folder for the wheels (created)")
    ap.add_argument("--glibc", default="2.28", help="the GPU machine's glibc (torch >= 2.6 needs 2.28)")
    ap.add_argument("--torch", default=None, help="the GPU machine's torch version (resolves its dependencies)")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        raise SystemExit(f"--python-version {args.python_version!r}: give major.minor, e.g. 3.12")
    if not re.fullmatch(r"2\.\d+", args.glibc):
        raise SystemExit(f"--glibc {args.glibc!r}: give 2.NN, e.g. 2.28")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    own = build_own_wheel(out)
    version = own.name.split("-")[1]
    print(f"wheelhouse: built {own.name}", flush=True)
    root_req = f"dreammask[{','.join(EXTRAS)}] @ {own.as_uri()}"
    built: list[str] = []
    roots = [root_req] + ([f"torch=={args.torch}"] if args.torch else [])
    report = resolve(roots, out, args.python_version, args.glibc, built)
    kept, left_out = walk(report, args.python_version, EXTRAS)
    kept.pop("dreammask", None)
    wanted = {(n, normal_version(i["metadata"]["version"])) for n, i in kept.items()}
    to_get = [f"{i['metadata']['name']}=={i['metadata']['version']}" for n, i in sorted(kept.items())
              if (n, normal_version(i["metadata"]["version"])) not in wheel_ids(out)]
    if to_get:
        pip("download", "--no-deps", "-q", "-d", str(out), *target_args(args.python_version, args.glibc), *to_get)
    wanted.add(("dreammask", normal_version(version)))
    for wheel in out.glob("*.whl"):  # an earlier build's other versions would be offered to the installer
        if wheel_id(wheel) not in wanted:
            wheel.unlink()
    missing = wanted - wheel_ids(out)
    if missing:
        raise SystemExit(f"wheelhouse: no wheel downloaded for {sorted(missing)}")
    (out / "requirements.txt").write_text(f"dreammask[{','.join(EXTRAS)}]=={version}\n")
    (out / "install.sh").write_text(INSTALL_SH)
    (out / "install.sh").chmod(0o755)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    wheels = sorted(p.name for p in out.glob("*.whl"))
    manifest = {"python_version": args.python_version, "glibc": args.glibc, "torch": args.torch, "dreammask": version,
                "commit": commit or None, "extras": list(EXTRAS), "provided_by_the_machine": list(PROVIDED),
                "left_out_with_torch": left_out, "built_from_sdist": built, "wheels": wheels,
                "bytes": sum(p.stat().st_size for p in out.glob("*.whl"))}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    print(f"wheelhouse: {len(wheels)} wheels, {manifest['bytes'] / 2**20:.0f} MiB in {out} "
          f"(left out with torch: {len(left_out)}; install offline with: sh {out.name}/install.sh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
