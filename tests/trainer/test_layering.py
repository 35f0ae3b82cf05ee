"""The trainer's layering: evaluation does not import the engine, production code does not import the
test helpers."""

import re
import subprocess
import sys
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[2] / "trainer"


def test_evaluation_imports_without_the_engine():
    code = (
        "import sys\n"
        "import dreammask.trainer.evaluation.evaluator, dreammask.trainer.evaluation.sem_seg\n"
        "import dreammask.trainer.evaluation.panoptic\n"
        "bad = [m for m in sys.modules if m.startswith('dreammask.trainer.engine')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_no_production_module_imports_the_test_helpers():
    offenders = []
    for path in TRAINER.rglob("*.py"):
        if path.name == "testing.py":
            continue
        if re.search(r"(trainer\.testing|from \.+testing) import", path.read_text()):
            offenders.append(str(path.relative_to(TRAINER)))
    assert offenders == []
