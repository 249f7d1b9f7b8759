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

## The provider simulator on http://127.0.0.1:8765.
simulator: install
	$(BIN)/prefect-pollers simulator --port 8765

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
