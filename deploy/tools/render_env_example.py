"""Write `.env.example` (repository root) from the platform's settings classes.

    python deploy/tools/render_env_example.py          # rewrite .env.example
    python deploy/tools/render_env_example.py --check  # exit 1 when it is out of date

The first part (compose variables, secrets, the settings a deployment usually sets) is fixed here;
the reference part lists every other setting of `all_settings_classes()` commented out with its
default, so a new field shows up after one run. tests/deploy checks that every field is present and
that the active keys match the Kubernetes ConfigMap and Secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from enum import Enum
from pathlib import Path

from pydantic import SecretStr

from dreammask.shared.settings import ENV_PREFIX, Settings, all_settings_classes

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / ".env.example"

HEADER = """\
# DreamMask settings for `docker compose` (copy to .env, then replace every change-me value).
# Every DREAMMASK_* line below reaches every DreamMask container; the service addresses
# (DREAMMASK_REDIS_URL, DREAMMASK_S3_ENDPOINT, DREAMMASK_MODELS_DIR, DREAMMASK_DEPLOYED_BACKENDS, ...)
# are fixed by docker-compose.yml per profile and are not read from here.
# The Kubernetes counterpart: deploy/k8s/base/configmap.yaml and deploy/k8s/base/secrets.env.example.
# Regenerate the reference part with: python deploy/tools/render_env_example.py

# ---------------------------------------------------------------- compose only (not DreamMask settings)
IMAGE_REGISTRY=dreammask
IMAGE_TAG=0.1.0
# The port clients reach the API at: the edge (nginx) publishes it; the API itself is not published.
API_PORT=8000
# Port of MinIO's S3 API on the host; clients download presigned URLs from it.
S3_PUBLIC_PORT=9000
MINIO_CONSOLE_PORT=9001
FLOWER_PORT=5555
# Host folder mounted read-only at /models (layout: gligen/ sam/ clip/ llm/, see docs/deploy.md).
MODELS_HOST_DIR=./models
VLLM_IMAGE=vllm/vllm-openai:v0.26.0
# Folder under MODELS_HOST_DIR/llm/ that vLLM serves.
LLM_MODEL_DIR=Qwen2.5-7B-Instruct
LLM_GPU_MEMORY_UTILIZATION=0.45
LLM_MAX_MODEL_LEN=8192
# GPU ids per GPU service (profile gpu); a one-GPU box shares GPU 0, e.g. 4 GPUs: 0 / 1 / 2 / 3.
LLM_GPU_IDS=0
SYNTHESIS_GPU_IDS=0
ANNOTATION_GPU_IDS=0
TRAINER_GPU_IDS=0

# ---------------------------------------------------------------- secrets (Kubernetes: the Secret)
# MinIO's root credentials are also the services' S3 keys in compose.
DREAMMASK_S3_ACCESS_KEY=change-me-s3-access-key
DREAMMASK_S3_SECRET_KEY=change-me-s3-secret-key-at-least-8-chars
# Bearer API keys -> tenant, as a JSON object.
DREAMMASK_API_KEYS={"change-me-api-key": "default"}
# The vLLM server requires this key; the association workers send it.
DREAMMASK_LLM_API_KEY=change-me-llm-api-key

# ---------------------------------------------------------------- settings a deployment sets (Kubernetes: the ConfigMap)
DREAMMASK_ENVIRONMENT=production
DREAMMASK_LOG_LEVEL=INFO
DREAMMASK_S3_BUCKET=dreammask
# host:port that clients (not the services) reach MinIO at; presigned URLs are signed for it.
DREAMMASK_S3_PUBLIC_ENDPOINT=localhost:9000
DREAMMASK_S3_PUBLIC_SECURE=false
DREAMMASK_PRESIGN_EXPIRY_S=3600
# Running tasks renew their lease; a message whose worker died is redelivered after the visibility timeout.
DREAMMASK_TASK_TIME_LIMIT_S=3600
DREAMMASK_VISIBILITY_TIMEOUT_S=60
DREAMMASK_ALLOW_HUB_DOWNLOADS=false
# The URL clients reach the API at (the edge's port, API_PORT): the links the API hands out use it.
DREAMMASK_PUBLIC_BASE_URL=http://localhost:8000
# Host names the API answers for (the Host header clients send); any other gets 400. Add yours.
DREAMMASK_ALLOWED_HOSTS=["localhost", "127.0.0.1"]
# The name vLLM serves the model under (--served-model-name) and the association workers ask for.
DREAMMASK_LLM_MODEL=Qwen/Qwen2.5-7B-Instruct
"""


def active_keys(text: str) -> set[str]:
    keys = set()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            keys.add(line.split("=", 1)[0].strip())
    return keys


def env_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple, set)):
        return json.dumps(list(value) if isinstance(value, (tuple, set)) else value)
    return str(value)


def render() -> str:
    set_above = active_keys(HEADER)
    parts = [HEADER, "\n# ================================================================ reference: every other setting",
             "# Commented out: the value shown is the default. Uncomment to change it.\n"]
    for cls in all_settings_classes():
        doc = (cls.__doc__ or "").strip().splitlines()
        title = f"{cls.__module__}.{cls.__name__}"
        parts.append(f"# ---------------------------------------------------------------- {title}")
        if doc and cls.__module__ != "dreammask.shared.settings":
            parts.append(f"# {doc[0]}")
        for name, field in cls.model_fields.items():
            key = ENV_PREFIX + name.upper()
            if key in set_above or (cls is not Settings and name in Settings.model_fields):
                continue  # set above, or a core field a service's class inherits (listed with the core's)
            default = field.get_default(call_default_factory=True)
            parts.append(f"# {key}={env_value(default)}")
        parts.append("")
    return "\n".join(parts).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 when .env.example differs from the render")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if TARGET.read_text() != text:
            print(".env.example is out of date: run python deploy/tools/render_env_example.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
