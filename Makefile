# prefect-pollers: `make demo` and `make test` bootstrap the venv themselves.
# Another Python gets its own venv: `make test PYTHON=python3.10 VENV=.venv-3.10`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# Material for MkDocs prints a banner about its successor on every build (`make docs`).
export NO_MKDOCS_2_WARNING := 1

# The interpreter to build the venv with. A pyenv shim such as python3.10 refuses to run
# unless its version is selected: then take that interpreter from pyenv's versions.
PYTHON_EXE = $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null \
	|| ls -d "$$(pyenv root 2>/dev/null)"/versions/*/bin/$(notdir $(PYTHON)) 2>/dev/null | sort -V | tail -n 1)

# Two tested lines, each with its known-good versions (pyproject.toml has the bounds a user
# installs with): constraints/prefect-3.8.txt (Python 3.10 to 3.13) and
# constraints/prefect-3.9.txt (Python 3.11 to 3.13; Prefect 3.9 requires 3.11). The line
# follows the venv's Python (its existing interpreter, else the one it will be built
# with): 3.10 takes 3.8, newer ones 3.9. LINE=3.8 overrides it (`make test LINE=3.8`).
VENV_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON_EXE))
VENV_PY_MINOR := $(shell $(VENV_PYTHON) -c 'import sys; print(sys.version_info[1])' 2>/dev/null)
LINE ?= $(if $(filter 10,$(VENV_PY_MINOR)),3.8,3.9)
CONSTRAINTS := constraints/prefect-$(LINE).txt
ifeq ($(wildcard $(CONSTRAINTS)),)
$(error LINE=$(LINE): no $(CONSTRAINTS) (the lines: $(patsubst constraints/prefect-%.txt,%,$(wildcard constraints/prefect-*.txt))))
endif
ifeq ($(LINE)-$(VENV_PY_MINOR),3.9-10)
$(error LINE=3.9: Prefect 3.9 requires Python 3.11 or newer, $(VENV) has 3.10 (LINE=3.8 is its line))
endif

.PHONY: install demo check test-fast test test-latest flaky bench soak ui simulator lint clean \
	postgresql server-postgres docs docs-serve

# Re-run when the dependencies or their pins change, or the venv's line does (the stamp
# names the constraints file it was installed with). The venv ignores itself for git.
$(STAMP): pyproject.toml $(CONSTRAINTS) $(if $(wildcard $(STAMP)),$(if $(filter $(CONSTRAINTS),$(file < $(STAMP))),,FORCE))
	@test -x $(BIN)/python || { test -n "$(PYTHON_EXE)" || { echo "no runnable $(PYTHON)" >&2; exit 1; }; \
		$(PYTHON_EXE) -m venv $(VENV); }
	@echo '*' > $(VENV)/.gitignore
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[simulator,webhooks,test]' -c $(CONSTRAINTS)
	@echo $(CONSTRAINTS) > $(STAMP)

.PHONY: FORCE
FORCE:

install: $(STAMP)

## Run a batch on the local simulator and Prefect's embedded server (PROVIDER=exona by default).
demo: install
	$(BIN)/python -m flows.demo $(if $(PROVIDER),--provider $(PROVIDER))

# Test lanes (docs/development.md: "Tests"). The fast lane is what a bare `pytest` runs (pyproject's
# addopts); `make test` replaces its marker expression with `-m ""`: everything.
PYTEST := PREFECT_SERVER_LOGGING_LEVEL=CRITICAL $(BIN)/python -m pytest
FAST_LANE := -m "not e2e and not slow"
ALL_LANES := -m ""
# Branch coverage of the package in `make test` (in-process only: subprocesses are not
# measured). CI measures it once, on the newest Python: 92.05-92.07 % (statements and branches
# of prefect_pollers/) in three fresh-clone runs here; the floor is that, less 2 points of slack
# for what varies between runs and machines (timing-dependent branches).
COV_FAIL_UNDER ?= 90
COVERAGE := --cov=prefect_pollers --cov-branch --cov-report=term:skip-covered \
	--cov-fail-under=$(COV_FAIL_UNDER)
# Two test processes (pytest-xdist): the fast lane took 3.3 min instead of 5.7 on this
# 2-core machine. Each process starts its own session fixtures (Prefect test server,
# simulator); tests are dealt out one by one, except the e2e modules sharing one server
# stack (`xdist_group("e2e-stack")`), which one process runs. XDIST= runs in this process.
XDIST ?= -n 2 --dist loadgroup

## The loop to run after each change (< 2 min): lint, then the fast lane (not e2e, not slow).
check: install
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	$(MAKE) --no-print-directory test-fast || status=1; \
	exit $$status

## The fast lane's tests alone (what a bare `pytest` runs).
test-fast: install
	$(PYTEST) -q $(FAST_LANE) $(XDIST) $(PYTEST_ARGS)

## Every test (fast lane, slow, e2e on PostgreSQL), with branch coverage of prefect_pollers/.
test: install postgresql
	$(PYTEST) -q $(ALL_LANES) $(XDIST) $(COVERAGE) $(PYTEST_ARGS)

# What a new user's `pip install prefect-pollers[...]` gets today: no constraints file, so
# the resolver picks the newest releases pyproject.toml's bounds allow (on PYTHON).
LATEST_VENV ?= .venv-latest
LATEST_PACKAGES := prefect fastapi SQLAlchemy starlette uvicorn pydantic httpx

## The fast lane on the newest releases: the package and its extras without any pins, in a throwaway venv (LATEST_VENV, .venv-latest, made anew each time).
test-latest:
	@test -n "$(PYTHON_EXE)" || { echo "no runnable $(PYTHON)" >&2; exit 1; }
	rm -rf $(LATEST_VENV)
	$(PYTHON_EXE) -m venv $(LATEST_VENV)
	@echo '*' > $(LATEST_VENV)/.gitignore
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install -q -e '.[simulator,webhooks,testing,test]'
	@$(LATEST_VENV)/bin/python -c 'import sys; from importlib.metadata import version; \
		print("resolved on Python", sys.version.split()[0] + ":", \
		", ".join(f"{n} {version(n)}" for n in sys.argv[1:]))' $(LATEST_PACKAGES)
	PREFECT_SERVER_LOGGING_LEVEL=CRITICAL $(LATEST_VENV)/bin/python -m pytest -q $(FAST_LANE) \
		$(XDIST) $(PYTEST_ARGS)

## Run a lane N times (N=3 LANE=check|test) and list the tests that failed in any run.
flaky: install $(if $(filter test,$(LANE)),postgresql)
	@rm -rf .flaky && mkdir -p .flaky && echo '*' > .flaky/.gitignore; \
	for run in $$(seq $(or $(N),3)); do \
		echo "=== flaky: run $$run of $(or $(N),3), lane $(or $(LANE),check)"; \
		$(PYTEST) -q -p no:cacheprovider $(if $(filter test,$(LANE)),$(ALL_LANES),$(FAST_LANE)) \
			--junitxml=.flaky/run-$$run.xml $(PYTEST_ARGS); \
	done; \
	$(BIN)/python scripts/flaky_report.py .flaky/run-*.xml

## Benchmarks: one JSON line each, also appended to benchmarks/results.jsonl (BENCH_RESULTS=path elsewhere; BENCH=name runs one: poll_efficiency, rate_limit, shared_rate_limit, overhead, scale, scale_out, callbacks, durable, ledger, provider_batch). scale_out takes JOBS= and CAP= (40,000 and 2,000 by default: make bench BENCH=scale_out JOBS=100000).
bench: install postgresql
	$(BIN)/python -m benchmarks $(BENCH)

## Soak: 1,000 jobs, every simulator fault and a 30 s outage of a Prefect server on PostgreSQL; one JSON line (~4 min), recorded as bench's.
soak: install postgresql
	$(BIN)/python -m benchmarks soak

## A local Prefect server with its UI on http://127.0.0.1:4200.
ui: install
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

## Debian's PostgreSQL server binaries (e2e tests, scale_out and soak benchmarks, server-postgres); installs them if missing.
postgresql:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
		|| (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql)

## The `ui` server on a local PostgreSQL kept in .postgres instead of SQLite (Ctrl-C stops both).
server-postgres: install postgresql
	$(BIN)/python -m deployments.postgres serve --port 4200 --data-dir .postgres

## The webhook receiver on http://127.0.0.1:8780 for the apixo-callbacks demo block (after `make blocks`).
webhooks: install
	$(BIN)/prefect-pollers webhooks serve --host 127.0.0.1 --port 8780 --block apixo-credentials/apixo-callbacks

## The provider simulator on http://127.0.0.1:8765 (the demo's time scale, as the demo blocks expect).
simulator: install
	$(BIN)/prefect-pollers simulator --port 8765 --time-scale $(SIM_TIME_SCALE)

# Scheduled deployments (docs/getting-started.md: "Deploy it"). These targets talk
# to PREFECT_API_URL, by default the `make ui` server.
# The demo's time scale lives in one place, the provider registry (0.05: a 60 s job takes 3 s).
SIM_TIME_SCALE = $(shell $(BIN)/python -c 'from prefect_pollers.testing.registry import DEMO_TIME_SCALE; print(DEMO_TIME_SCALE)')
POOL := pollers-process
blocks pool deploy worker screenshot webhooks recovery poller: export PREFECT_API_URL ?= http://127.0.0.1:4200/api
.PHONY: blocks pool deploy worker screenshot webhooks recovery poller

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

## Crash recovery (idempotent): runs whose heartbeats stop (every 30 s, prefect.yaml) go Crashed, then run again.
recovery: install
	$(BIN)/prefect-pollers recovery install --heartbeat-frequency 30

## The poller service: waits for durable waits' jobs, resumes their flow runs; run several, they share shards through leases in the ledger (SHARD=i/n: a static shard instead; Ctrl-C stops it).
poller: install
	$(BIN)/prefect-pollers poller $(if $(SHARD),--shard $(SHARD))

## A process worker that runs the deployments' flow runs (Ctrl-C stops it).
worker: install
	$(BIN)/prefect worker start --pool $(POOL) --type process

## docs/assets/flow-run.png: the latest completed batch-scans run in the UI (installs Chromium if missing).
screenshot: install
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)
	$(BIN)/python scripts/screenshot.py

# The docs site (mkdocs.yml, docs/): the `docs` extra goes into the same venv, with the pins.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[simulator,webhooks,test,docs]' -c $(CONSTRAINTS)
	@touch $(DOCS_STAMP)

## The docs site in site/: benchmark plots from benchmarks/results.jsonl, then mkdocs build --strict.
docs: $(DOCS_STAMP)
	$(BIN)/python scripts/bench_plots.py
	$(BIN)/mkdocs build --strict

## The docs site, live, on 127.0.0.1: port DOCS_PORT, by default 8000 or a free one if 8000 is taken.
docs-serve: $(DOCS_STAMP)
	$(BIN)/python scripts/bench_plots.py
	@port=$${DOCS_PORT:-$$($(BIN)/python -c 'import socket; c = socket.socket(); \
		busy = c.connect_ex(("127.0.0.1", 8000)) == 0; c.close(); s = socket.socket(); \
		s.bind(("127.0.0.1", 0 if busy else 8000)); print(s.getsockname()[1])')}; \
	echo "docs on http://127.0.0.1:$$port/"; \
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:$$port

## Lint, format check and type check (settings in pyproject.toml); runs all three, fails if any does.
lint: install
	@status=0; \
	echo '$(BIN)/ruff check .'; $(BIN)/ruff check . || status=1; \
	echo '$(BIN)/ruff format --check .'; $(BIN)/ruff format --check . || status=1; \
	echo '$(BIN)/mypy'; $(BIN)/mypy || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache .flaky site docs/assets/bench
