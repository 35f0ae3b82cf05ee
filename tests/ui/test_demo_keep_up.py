"""`dreammask demo --keep-up`: prints the review UI's address and keeps the platform up until Ctrl-C."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_demo_keep_up_serves_the_ui_until_ctrl_c(tmp_path):
    exe = shutil.which("dreammask", path=str(Path(sys.executable).parent))
    assert exe, "the dreammask command is installed with the package"
    # A shell that has not activated the virtual environment, as after `make demo`.
    venv_bin = str(Path(exe).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": path}
    proc = subprocess.Popen([exe, "demo", "--out", str(tmp_path / "demo"), "--num-novel", "1",
                             "--images-per-category", "1", "--image-size", "64", "--train-iterations", "0",
                             "--keep-up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            # Started as a script's background job is (SIGINT ignored, inherited through exec):
                            # `kill -INT` must still stop it, as Ctrl-C does in a terminal.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines, ui_url = [], None
    try:
        deadline = time.monotonic() + 400
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"review UI: (http://\S+/ui)", line)
            if m:
                ui_url = m.group(1)
            if "press Ctrl-C" in line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        assert ui_url, "".join(lines)
        time.sleep(1)
        r = httpx.get(f"{ui_url}/jobs", follow_redirects=True, timeout=30)
        assert r.status_code == 200 and 'id="login-form"' in r.text
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, "".join(lines) + rest
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{ui_url}/login", timeout=5)
        # The end says how to run `dreammask` from this shell, and the line works as printed.
        tail = " ".join(rest.split())
        m = re.search(r"run `source (\S+)` in your shell to type `dreammask \.\.\.`, or call it by its path: (\S+) --help",
                      tail)
        assert m and Path(m.group(1)).name == "activate" and m.group(2).endswith("dreammask"), rest
        r = subprocess.run(f"source {m.group(1)} && dreammask --help", shell=True, executable="/bin/bash",
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "submit" in r.stdout, r.stderr
        r = subprocess.run(f"{m.group(2)} --help", shell=True, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "submit" in r.stdout, r.stderr
        assert "dreammask up" in tail
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
