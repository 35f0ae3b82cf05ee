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


def test_configuration_lives_in_one_package():
    # The model's, the engine's and detectron2's keys: one package, no config module elsewhere.
    stray = [str(p.relative_to(TRAINER)) for p in TRAINER.rglob("config.py")]
    assert stray == []
    code = (
        "from dreammask.trainer.config import get_cfg, get_training_cfg\n"
        "from dreammask.trainer.config.d2 import D2_META_ARCHITECTURE, prepare_d2_config\n"
        "cfg = get_training_cfg('dreammask_convnext_large')\n"
        "assert cfg.MODEL.DREAMMASK.LAMBDA_SRA > 0 and cfg.SOLVER.STEPS == (327778, 355092), cfg.SOLVER.STEPS\n"
        "assert 'DATALOADER' in get_cfg()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_config_package_never_imports_torch():
    """The API image has no torch: building any preset's config, tiny included, must not pull it in."""
    code = (
        "import sys\n"
        "import dreammask.trainer.config as c\n"
        "import dreammask.trainer.config.d2, dreammask.trainer.config.build, dreammask.trainer.config.defaults\n"
        "for name in c.shipped_configs():\n"
        "    c.get_training_cfg(name)\n"
        "c.get_training_cfg(tiny=True)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad[:5]\n"
        "assert 'dreammask.trainer.tiny' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
