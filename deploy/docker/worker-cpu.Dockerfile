# syntax=docker/dockerfile:1.7
# CPU workers: association (embedded ranking, or the LLM over HTTP), curation, and the embedded
# synthesis/annotation backends and the trainer on CPU (the `cpu` compose profile, the `cpu` overlay).
# One image for every queue; the command picks the queue.
#   docker build -f deploy/docker/worker-cpu.Dockerfile -t dreammask/worker-cpu:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY shared ./shared
COPY services ./services
COPY trainer ./trainer
# torch is pinned and installed in the same resolver run as the package, so no extra can pull
# another torch (or CUDA wheels) behind its back.
RUN pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
      "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
      "./[association,synthesis,annotation,curation,trainer]" \
 && python -c "import torch, sys; sys.exit(0 if not torch.version.cuda else 'CUDA torch in the CPU image')"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dreammask-worker-cpu" \
      org.opencontainers.image.description="DreamMask Celery workers on CPU (every queue)"
# libglib2.0-0 and libgomp1: OpenCV and torch's CPU kernels load them at import.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/dreammask \
    HF_HOME=/home/dreammask/.cache/huggingface \
    DREAMMASK_MODELS_DIR=/models
RUN groupadd --gid 10001 dreammask \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/dreammask --shell /usr/sbin/nologin dreammask \
 && mkdir -p /models && chown 10001:10001 /models
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/dreammask
USER 10001:10001
# Weights are mounted here read-only (compose volume / Kubernetes PVC); nothing is baked in.
VOLUME ["/models"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["python", "-m", "dreammask.services.cli.healthcheck", "--max-age", "120"]
CMD ["celery", "-A", "dreammask.services.curation.worker", "worker", "-Q", "curation", "--concurrency=1", "--prefetch-multiplier=1", "-n", "curation@%h"]
