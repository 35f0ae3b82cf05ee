"""Dockerfiles: pinned bases, non-root user, health check, exact torch pins, no torch in the API image."""

from __future__ import annotations

import pytest
from deploy_checks import DOCKER_DIR, ROOT, dockerfile_errors, dockerfile_instructions

IMAGES = ("api", "worker-cpu", "gpu", "trainer")


def read(name):
    return (DOCKER_DIR / f"{name}.Dockerfile").read_text()


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_passes_the_lint(name):
    assert dockerfile_errors(read(name), name, allow_torch=name != "api") == []


def test_every_dockerfile_is_checked():
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKER_DIR.glob("*.Dockerfile")} == set(IMAGES)


@pytest.mark.parametrize(
    "name, old, new, expected",
    [
        ("api", "ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm", "ARG PYTHON_IMAGE=python:latest", "not pinned"),
        ("gpu", "ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04", "ARG CUDA_RUNTIME_IMAGE=nvidia/cuda",
         "not pinned"),
        ("trainer", "ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04", "ARG CUDA_DEVEL_IMAGE",
         "uses an ARG without a default"),
        ("worker-cpu", "USER 10001:10001", "USER root", "runs as root"),
        ("gpu", "USER 10001:10001", "", "has no USER"),
        ("trainer", "HEALTHCHECK", "# HEALTHCHECK", "no HEALTHCHECK"),
        ("worker-cpu", '"torch==${TORCH_VERSION}"', '"torch"', "`torch` is not an exact pin"),
        ("api", 'RUN pip install "./[api]"', 'RUN pip install "torch==2.14.1" "./[api]"', "must not contain torch"),
        ("worker-cpu", "COPY trainer ./trainer", "COPY trainer ./trainer\nCOPY models /models", "copies models"),
    ],
)
def test_lint_catches_broken_dockerfiles(name, old, new, expected):
    text = read(name)
    assert old in text
    errors = dockerfile_errors(text.replace(old, new), name, allow_torch=name != "api")
    assert any(expected in e for e in errors), errors


def test_images_install_their_extras_and_pinned_torch():
    runs = {n: " ".join(r for i, r in dockerfile_instructions(read(n)) if i == "RUN") for n in IMAGES}
    assert '"./[api]"' in runs["api"] and "torch==" not in runs["api"]
    assert "download.pytorch.org/whl/cpu" in read("worker-cpu")
    for gpu in ("gpu", "trainer"):
        assert '"torch==${TORCH_VERSION}+${TORCH_CUDA}"' in runs[gpu]
        assert "ARG TORCH_VERSION=2.14.1" in read(gpu) and "ARG TORCHVISION_VERSION=0.29.1" in read(gpu)
    assert "detectron2" in runs["trainer"] and "FORCE_CUDA=1" in runs["trainer"]
    froms = [r for i, r in dockerfile_instructions(read("trainer")) if i == "FROM"]
    assert froms[0].startswith("${CUDA_DEVEL_IMAGE}") and froms[-1].startswith("${CUDA_RUNTIME_IMAGE}")


def test_dockerignore_keeps_weights_and_secrets_out():
    lines = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".env", "models", ".venv", ".git", "data", "**/*.safetensors", "deploy/k8s/**/secrets.env"):
        assert entry in lines
    # The build context must still carry what `pip install .` needs.
    for needed in ("shared", "services", "trainer", "pyproject.toml", "setup.py", "README.md"):
        assert needed not in lines
