"""The same settings reach the same workloads in compose and Kubernetes, and only real settings do."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from deploy_checks import (
    ENV_EXAMPLE,
    K8S_DIR,
    ROOT,
    all_overlays,
    build_kustomization,
    env_example_errors,
    load_compose_raw,
    parity_errors,
    parse_env,
    settings_fields,
)


@pytest.fixture(scope="module")
def overlays():
    return all_overlays()


@pytest.fixture(scope="module")
def raw():
    return load_compose_raw()


def test_compose_and_kubernetes_set_the_same_settings(raw, overlays):
    assert parity_errors(raw, overlays) == []


def test_a_setting_added_to_compose_only_is_caught(raw, overlays):
    broken = copy.deepcopy(raw)
    broken["services"]["synthesis-gpu"]["environment"]["DREAMMASK_SYNTHESIS_BATCH_SIZE"] = "8"
    assert parity_errors(broken, overlays) == [
        "DREAMMASK_SYNTHESIS_BATCH_SIZE reaches compose service synthesis-gpu but not Deployment synthesis (overlay gpu)"
    ]


def test_a_setting_added_to_env_example_only_is_caught(raw, overlays):
    text = ENV_EXAMPLE.read_text() + "DREAMMASK_MAX_SCENES_PER_JOB=500\n"
    errors = parity_errors(raw, overlays, env_text=text)
    assert "DREAMMASK_MAX_SCENES_PER_JOB reaches compose service api but not Deployment api (overlay cpu)" in errors
    # env_file feeds every DreamMask container, so every mapped workload reports it.
    assert len(errors) == 14  # 7 mapped workloads per profile (api, 5 workers with the loop, trainer)


def test_a_setting_added_to_kubernetes_only_is_caught(raw, tmp_path):
    import shutil

    k8s = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, k8s)
    cm = k8s / "base/configmap.yaml"
    doc = yaml.safe_load(cm.read_text())
    doc["data"]["DREAMMASK_LAYOUT_BATCH_SIZE"] = "32"
    cm.write_text(yaml.safe_dump(doc))
    overlays = {name: build_kustomization(k8s / "overlays" / name) for name in ("cpu", "gpu")}
    errors = parity_errors(raw, overlays)
    assert "DREAMMASK_LAYOUT_BATCH_SIZE reaches Deployment curation (overlay gpu) but not compose service curation-gpu" in errors


def test_backend_policy_values_must_agree(raw, overlays):
    broken = copy.deepcopy(overlays)
    for res in broken["gpu"]:
        if res["kind"] == "ConfigMap" and res["metadata"]["name"] == "dreammask-config":
            res["data"]["DREAMMASK_DEPLOYED_BACKENDS"] = '{"synthesis": ["gligen"]}'
    errors = parity_errors(raw, broken)
    assert any(e.startswith("DREAMMASK_DEPLOYED_BACKENDS differs: compose api-gpu") for e in errors), errors


def test_env_example_lists_every_setting():
    text = ENV_EXAMPLE.read_text()
    assert env_example_errors(text) == []
    _, mentioned = parse_env(text)
    assert set(settings_fields()) <= mentioned


def test_env_example_check_catches_missing_and_unknown_settings():
    text = ENV_EXAMPLE.read_text().replace("# DREAMMASK_GLIGEN_BATCH_SIZE=", "# DREAMMASK_GLIGEN_BATCHSIZE=")
    errors = env_example_errors(text)
    assert any("DREAMMASK_GLIGEN_BATCH_SIZE is missing" in e for e in errors), errors
    assert any("DREAMMASK_GLIGEN_BATCHSIZE is not a DreamMask setting" in e for e in errors), errors
    leaked = ENV_EXAMPLE.read_text().replace("DREAMMASK_S3_SECRET_KEY=change-me-s3-secret-key-at-least-8-chars",
                                             "DREAMMASK_S3_SECRET_KEY=Zx81!realvalue")
    assert any("DREAMMASK_S3_SECRET_KEY must hold a change-me placeholder" in e for e in env_example_errors(leaked))


def test_env_example_secrets_match_the_kubernetes_secret_template():
    active, _ = parse_env(ENV_EXAMPLE.read_text())
    k8s_secret, _ = parse_env((K8S_DIR / "base/secrets.env.example").read_text())
    assert set(k8s_secret) == {k for k in active if k in k8s_secret}
    assert set(k8s_secret) == {"DREAMMASK_S3_ACCESS_KEY", "DREAMMASK_S3_SECRET_KEY", "DREAMMASK_API_KEYS",
                               "DREAMMASK_LLM_API_KEY"}


def test_env_example_values_are_valid_settings():
    """The active values parse as the platform's settings (an operator copying the file gets a valid config)."""
    import os

    from dreammask.shared.settings import all_settings_classes

    active, _ = parse_env(ENV_EXAMPLE.read_text())
    env = {k: v for k, v in active.items() if k.startswith("DREAMMASK_")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for cls in all_settings_classes():
            cls()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_env_example_is_up_to_date_with_its_generator():
    proc = subprocess.run([sys.executable, str(ROOT / "deploy/tools/render_env_example.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
