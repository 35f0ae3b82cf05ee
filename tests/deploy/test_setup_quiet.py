"""Set-up is quiet: building the package prints no setuptools warnings, the wheel carries its data files (the
API's docs assets, vocabularies, configs), and the Makefile sends pip's output to a log, one line per step."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_building_the_package_prints_no_warnings_and_ships_its_data(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    for noise in ("Warning", "deprecated", "would be ignored", "!!"):
        assert noise not in out, out[:3000]
    wheel = next(tmp_path.glob("dreammask-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("dreammask/services/api/static/docs/swagger-ui-bundle.js",
                   "dreammask/services/api/static/docs/redoc.standalone.js",
                   "dreammask/services/api/static/docs/SHA256SUMS",
                   "dreammask/shared/data/vocab/coco_panoptic.txt",
                   "dreammask/services/association/data/lexical/senses.tsv",
                   "dreammask/services/api/ui/templates/base.html",
                   "dreammask/trainer/configs/dreammask_convnext_large.yaml"):
        assert needed in names, needed
    assert not any("__pycache__" in n for n in names)


def test_makefile_setup_logs_pip_and_says_what_it_does():
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("$(STAMP): pyproject.toml setup.py", 1)[1].split("\nsetup:", 1)[0]
    commands = [line.strip() for line in recipe.splitlines() if line.startswith("\t@") or line.startswith("\t$")]
    assert commands and all(c.startswith("@") for c in commands), commands  # make echoes no command line
    installs = [c for c in re.split(r"\n\t(?=@)", recipe) if "pip install" in c]
    assert len(installs) >= 3 and all("$(SETUP_LOG)" in c for c in installs), installs
    assert recipe.count('@echo "setup: ') >= 4
    # The torch comment tells the truth about CUDA.
    assert "does NOT avoid CUDA" in text and "no CPU-only wheel" in text
