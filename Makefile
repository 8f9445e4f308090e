# The two commands of the README are `make run` and `make test`; the rest are conveniences.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/data/dagster_home

.PHONY: run test install dagster-home dev materialize generate benchmark lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

dagster-home:
	mkdir -p $(DAGSTER_HOME)
	ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

## Install, generate the embedded default data set if data/raw is empty, materialise everything.
run: install dagster-home
	$(BIN)/python -m recsys_assets.pipeline

## The test suite (what CI runs).
test: install
	$(BIN)/python -m pytest

## The Dagster UI (and the daemon, for schedules and sensors) on http://127.0.0.1:3000
dev: install dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

generate: install
	$(BIN)/python -m recsys_assets.generate --scale $${SCALE:-0.05} --out data/raw

benchmark: install
	$(BIN)/python benchmarks/bench_foundation.py --scale $${SCALE:-1.0}

lint: install
	$(BIN)/ruff check recsys_assets recsys_serving tests benchmarks

clean:
	rm -rf data/warehouse.duckdb data/dagster_home data/mlruns
