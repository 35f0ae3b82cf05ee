"""The API image installs no torch: the API and every router must import and serve without it."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ["torch", "torchvision", "transformers", "diffusers", "open_clip", "cv2", "segment_anything",
           "fvcore", "timm", "sentence_transformers"]

SCRIPT = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of these now raises ImportError
import dreammask.services.api.main as m
paths = m.app.openapi()["paths"]
for p in ("/v1/jobs", "/v1/datasets/{{dataset_id}}", "/v1/trainings", "/readyz", "/metrics"):
    assert p in paths, p
print("ok")
"""


def test_api_imports_and_routes_without_torch():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")
