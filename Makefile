# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench bench-codec bench-ingest bench-sync bench-login venv clean system-deps \
        canary-status canary-promote canary-rollback

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the package definition changes.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## make run: start every role on the embedded PostgreSQL (or DATABASE_URL when set).
run: $(STAMP)
	$(VENV)/bin/fleet serve

## make system-deps: Debian packages the suite runs as real parts (chromium, nginx, haproxy, prometheus).
system-deps:
	@bash tools/system-deps.sh

## make test: the whole suite against a real PostgreSQL (TEST_DATABASE_URL, else embedded).
test: $(STAMP) system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check fleet tests bench tools
	$(VENV)/bin/ruff check fleet tests bench tools
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format fleet tests bench tools
	$(VENV)/bin/ruff check --fix fleet tests bench tools

bench: bench-codec bench-ingest bench-sync

bench-codec: $(STAMP)
	$(PY) bench/bench_codec.py

bench-ingest: $(STAMP)
	$(PY) bench/bench_ingest.py

bench-sync: $(STAMP)
	$(PY) bench/bench_sync.py

bench-login: $(STAMP)
	$(PY) bench/bench_login_timing.py --output bench/results/login_timing.json

## make canary-status|canary-promote|canary-rollback: compare the canary with stable from their metrics and
## move traffic between them (deploy/canary/, docs/OPERATIONS.md; CANARY_* variables, see tools/canary.py).
canary-status: $(STAMP)
	$(PY) tools/canary.py status

canary-promote: $(STAMP)
	$(PY) tools/canary.py promote

canary-rollback: $(STAMP)
	$(PY) tools/canary.py rollback

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
