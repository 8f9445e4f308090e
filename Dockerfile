# Mirrors the README: install into a venv with `make install`, then `make run`.
# (Not built in CI: the build machines have no Docker engine.)
FROM python:3.11-slim-bookworm

RUN apt-get update && apt-get install -y --no-install-recommends make gcc g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md Makefile dagster.yaml workspace.yaml ./
COPY recsys_assets ./recsys_assets
COPY recsys_serving ./recsys_serving
COPY data/README.md ./data/README.md
RUN make install PYTHON=python3.11

ENV DAGSTER_HOME=/app/data/dagster_home
EXPOSE 3000 8000
# The main job (generate the default data set when data/raw is empty, materialise everything).
CMD ["make", "run"]
