# syntax=docker/dockerfile:1.7
# GPU workers for synthesis (GLIGEN in diffusers) and annotation (SAM + CLIP): a CUDA runtime base and
# a pinned CUDA build of torch. One process per GPU; the command picks the queue.
#   docker build -f deploy/docker/gpu.Dockerfile -t dreammask/gpu:0.1.0 .
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- build
FROM ${CUDA_RUNTIME_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_CUDA=cu128
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY shared ./shared
COPY services ./services
COPY trainer ./trainer
# The local version (+cu128) pins the CUDA build itself, not just the version number.
RUN pip install --extra-index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
      "torch==${TORCH_VERSION}+${TORCH_CUDA}" "torchvision==${TORCHVISION_VERSION}+${TORCH_CUDA}" \
      "./[synthesis,annotation]"

# ---------------------------------------------------------------- runtime
FROM ${CUDA_RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dreammask-gpu" \
      org.opencontainers.image.description="DreamMask GPU workers: synthesis (GLIGEN) and annotation (SAM, CLIP)"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/dreammask \
    HF_HOME=/home/dreammask/.cache/huggingface \
    DREAMMASK_MODELS_DIR=/models \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Ubuntu 24.04 images ship a uid-1000 "ubuntu" user; ours gets its own fixed uid.
RUN groupadd --gid 10001 dreammask \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/dreammask --shell /usr/sbin/nologin dreammask \
 && mkdir -p /models && chown 10001:10001 /models
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/dreammask
USER 10001:10001
VOLUME ["/models"]
# Loading GLIGEN or SAM ViT-H takes a while: the start period covers it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
  CMD ["python", "-m", "dreammask.services.cli.healthcheck", "--max-age", "120"]
CMD ["celery", "-A", "dreammask.services.synthesis.worker", "worker", "-Q", "synthesis", "--concurrency=1", "--prefetch-multiplier=1", "-n", "synthesis@%h"]
