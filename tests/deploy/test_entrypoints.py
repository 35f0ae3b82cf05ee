"""Every Python module the deployment files start exists in the package, so a rename breaks a test,
not a rollout."""

from __future__ import annotations

import importlib.util
import re

from deploy_checks import COMPOSE_FILE, DOCKER_DIR, K8S_DIR

MODULE_REF = re.compile(r"(?:-A[\s\"',]+|-m[\s\"',]+|--module[\s\"',-]+|\")(dreammask(?:\.\w+)+)")


def referenced_modules() -> dict[str, set[str]]:
    files = [COMPOSE_FILE, *DOCKER_DIR.glob("*.Dockerfile"), *K8S_DIR.rglob("*.yaml")]
    out: dict[str, set[str]] = {}
    for path in files:
        for m in MODULE_REF.finditer(path.read_text()):
            out.setdefault(m.group(1).split(":")[0], set()).add(str(path.relative_to(COMPOSE_FILE.parent)))
    return out


def test_the_scan_finds_every_kind_of_entry_point():
    mods = referenced_modules()
    assert "dreammask.services.cli.healthcheck" in mods
    assert "dreammask.services.synthesis.worker" in mods
    assert "dreammask.trainer.service.worker" in mods
    assert "dreammask.trainer.train_net" in mods  # the Job template (torchrun --module)


def test_every_referenced_module_exists():
    missing = {m: sorted(files) for m, files in referenced_modules().items() if importlib.util.find_spec(m) is None}
    assert missing == {}, f"modules named in deployment files but absent from the package: {missing}"


def test_api_is_served_with_the_protocol_that_cuts_slow_clients():
    """Every way the API is started goes through dreammask.services.api.server (uvicorn with the deadlines)."""
    from dreammask.services.api import server

    assert server.APP == "dreammask.services.api.main:app"
    assert importlib.util.find_spec("dreammask.services.api.main") is not None
    docker = [line for line in (DOCKER_DIR / "api.Dockerfile").read_text().splitlines() if line.startswith("CMD")]
    assert docker and "dreammask.services.api.server" in docker[-1]
    k8s = (K8S_DIR / "base" / "api.yaml").read_text()
    assert '"-m", "dreammask.services.api.server"' in k8s and "uvicorn dreammask" not in k8s
    for path in (COMPOSE_FILE, DOCKER_DIR / "api.Dockerfile", K8S_DIR / "base" / "api.yaml"):
        assert '"uvicorn", "dreammask.services.api.main:app"' not in path.read_text(), path


def test_trainer_job_arguments_parse_with_train_net():
    """The Job template's arguments are the ones train_net really takes (no stray flag lands in the
    config overrides)."""
    from pathlib import Path

    import yaml

    from dreammask.trainer.train_net import parse_args

    job = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/k8s/jobs/trainer-job.yaml").read_text())
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    args = cmd[cmd.index("dreammask.trainer.train_net") + 1:]
    ns = parse_args(args)
    assert ns.config_file and ns.opts == [], ns
