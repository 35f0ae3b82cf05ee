# syntax=docker/dockerfile:1.7
# The REST API: `pip install .[api]` only. No torch, no CUDA: the image stays small and starts fast.
#   docker build -f deploy/docker/api.Dockerfile -t dreammask/api:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------- build: a venv with the package
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY shared ./shared
COPY services ./services
COPY trainer ./trainer
# A non-editable install: the image carries no source tree. The check keeps torch out for good.
RUN pip install "./[api]" \
 && if pip show torch >/dev/null 2>&1; then echo "torch must not be in the API image" >&2; exit 1; fi

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dreammask-api" \
      org.opencontainers.image.description="DreamMask REST API (no torch)"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/dreammask
RUN groupadd --gid 10001 dreammask \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/dreammask --shell /usr/sbin/nologin dreammask
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/dreammask
USER 10001:10001
EXPOSE 8000
# Liveness only: /readyz also checks Redis and storage, which is what orchestrators ask separately.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# uvicorn serving dreammask.services.api.main:app with the API's own HTTP protocol (slow clients cut:
# DREAMMASK_HEADER_TIMEOUT_S, ...); it believes X-Forwarded-* only from DREAMMASK_FORWARDED_ALLOW_IPS.
CMD ["python", "-m", "dreammask.services.api.server", "--host", "0.0.0.0", "--port", "8000"]
