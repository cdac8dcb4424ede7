# The README's commands. Each target sets up what it needs first, from nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.synced

.PHONY: setup test demo bench protos lint up clean

setup: $(STAMP)

$(STAMP): pyproject.toml uv.lock tools/bootstrap-requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r tools/bootstrap-requirements.txt
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --python $(PY)
	touch $@

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/debate-engine demo

bench: setup
	$(PY) -m tests.benchmarks.run_all

up: setup
	$(VENV)/bin/debate-engine up

protos: setup
	$(PY) scripts/gen_protos.py

lint: setup
	cd protos && ../$(VENV)/bin/buf lint
	$(VENV)/bin/ruff check services tests scripts

clean:
	rm -rf $(VENV) var reports
