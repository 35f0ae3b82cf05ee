"""The training record module the API imports carries no torch (the API image has none)."""

import subprocess
import sys


def test_record_module_and_api_route_import_without_torch():
    code = (
        "import sys\n"
        "import dreammask.trainer.service.record\n"
        "assert 'torch' not in sys.modules, 'record pulled torch in'\n"
        "import dreammask.services.api.routes.trainings\n"
        "assert 'torch' not in sys.modules, 'the trainings route pulled torch in'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
