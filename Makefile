# prefect-pollers: `make demo` and `make test` bootstrap .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo test bench ui simulator lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

## Run a batch on the local simulator and Prefect's embedded server (PROVIDER=exona by default).
demo: install
	$(BIN)/python -m flows.demo $(if $(PROVIDER),--provider $(PROVIDER))

## The test suite (unit, simulator, integration under a Prefect test harness).
test: install
	PREFECT_SERVER_LOGGING_LEVEL=CRITICAL $(BIN)/python -m pytest -q $(PYTEST_ARGS)

## Benchmarks: one JSON line each.
bench: install
	$(BIN)/python -m benchmarks

## A local Prefect server with its UI on http://127.0.0.1:4200.
ui: install
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

## The provider simulator on http://127.0.0.1:8765 (time x0.05, as the demo blocks expect).
simulator: install
	$(BIN)/prefect-pollers simulator --port 8765 --time-scale $(SIM_TIME_SCALE)

# Scheduled deployments (README: "Scheduled deployments and the UI"). These targets talk
# to PREFECT_API_URL, by default the `make ui` server.
SIM_TIME_SCALE := 0.05
POOL := pollers-process
blocks pool deploy worker screenshot: export PREFECT_API_URL ?= http://127.0.0.1:4200/api
.PHONY: blocks pool deploy worker screenshot

## Register the blocks; save demo blocks exona, twyn, apixo, modelroute, generic for `make simulator`.
blocks: install
	$(BIN)/prefect block register -m prefect_pollers
	$(BIN)/python -m deployments.create_demo_blocks --simulator-url http://127.0.0.1:8765 --time-scale $(SIM_TIME_SCALE)

## The process work pool the deployments run on (idempotent).
pool: install
	$(BIN)/prefect work-pool create $(POOL) --type process --overwrite

## Create or update every deployment of deployments/prefect.yaml (run from the repository root).
deploy: install
	$(BIN)/prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml

## A process worker that runs the deployments' flow runs (Ctrl-C stops it).
worker: install
	$(BIN)/prefect worker start --pool $(POOL) --type process

## docs/flow-run.png: the latest completed batch-scans run in the UI (installs Chromium if missing).
screenshot: install
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)
	$(BIN)/python scripts/screenshot.py

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
