# syntax=docker/dockerfile:1.7
# The trainer (FC-CLIP + SRA) on GPU, with detectron2 built from source against the image's own torch.
# The build stage has the CUDA toolkit (nvcc); the runtime stage only the CUDA runtime.
#   docker build -f deploy/docker/trainer.Dockerfile -t dreammask/trainer:0.1.0 .
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- build: venv + detectron2 from source
FROM ${CUDA_DEVEL_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_CUDA=cu128
# detectron2 publishes no wheels for current torch: build a pinned commit. Override with --build-arg.
ARG DETECTRON2_REPO=https://github.com/facebookresearch/detectron2.git
ARG DETECTRON2_COMMIT=e0ec4e189d438848521aee7926f9900e114229f5
# Ampere, Ada and Hopper (A100/A10/L4/L40S/H100/H200), plus PTX for newer GPUs.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0+PTX"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git ninja-build \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY shared ./shared
COPY services ./services
COPY trainer ./trainer
RUN pip install --extra-index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
      "torch==${TORCH_VERSION}+${TORCH_CUDA}" "torchvision==${TORCHVISION_VERSION}+${TORCH_CUDA}" \
      "./[trainer]" ninja
# No GPU at build time: FORCE_CUDA builds the CUDA kernels anyway, for the arch list above.
RUN git clone "${DETECTRON2_REPO}" /tmp/detectron2 \
 && git -C /tmp/detectron2 checkout "${DETECTRON2_COMMIT}" \
 && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" MAX_JOBS=4 \
    pip install --no-build-isolation /tmp/detectron2 \
 && python -c "import detectron2, torch; print('detectron2', detectron2.__version__, 'torch', torch.__version__)" \
 && rm -rf /tmp/detectron2

# ---------------------------------------------------------------- runtime
FROM ${CUDA_RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dreammask-trainer" \
      org.opencontainers.image.description="DreamMask trainer: FC-CLIP + SRA on GPU, detectron2 built from source"
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
RUN groupadd --gid 10001 dreammask \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/dreammask --shell /usr/sbin/nologin dreammask \
 && mkdir -p /models /outputs && chown 10001:10001 /models /outputs
# Same OS and python3 as the build stage, so the venv (and detectron2's compiled _C) runs as built.
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/dreammask
USER 10001:10001
VOLUME ["/models", "/outputs"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
  CMD ["python", "-m", "dreammask.services.cli.healthcheck", "--max-age", "120"]
CMD ["celery", "-A", "dreammask.trainer.service.worker", "worker", "-Q", "training", "--concurrency=1", "--prefetch-multiplier=1", "-n", "trainer@%h"]
