# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The web UI's browser libraries: npm installs what package-lock.json pins, then they are copied into the
# package (git-ignored) so that a wheel carries them; nothing is fetched from a CDN at run time.
WEB_VENDOR := fleet/web/static/vendor/.installed

.PHONY: run test lint format bench bench-codec bench-ingest bench-sync bench-fleet-page venv web clean \
        system-deps canary-status canary-promote canary-rollback

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the package definition changes.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(WEB_VENDOR): package-lock.json tools/vendor_assets.py
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	$(PYTHON) tools/vendor_assets.py

## make web: install the web UI's pinned browser libraries into fleet/web/static/vendor/.
web: $(WEB_VENDOR)

## make run: start every role on the embedded PostgreSQL (or DATABASE_URL when set).
run: $(STAMP) $(WEB_VENDOR)
	$(VENV)/bin/fleet serve

## make system-deps: Debian packages the suite runs as real parts (chromium, nginx, haproxy, prometheus).
system-deps:
	@bash tools/system-deps.sh

## make test: the whole suite against a real PostgreSQL (TEST_DATABASE_URL, else embedded).
test: $(STAMP) $(WEB_VENDOR) system-deps
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

## make bench-fleet-page: the fleet page with 5,000 vehicles in headless Chromium (first render, main-thread time).
bench-fleet-page: $(STAMP) $(WEB_VENDOR) system-deps
	$(PY) bench/bench_fleet_page.py

## make canary-status|canary-promote|canary-rollback: compare the canary with stable from their metrics and
## move traffic between them (deploy/canary/, docs/OPERATIONS.md; CANARY_* variables, see tools/canary.py).
canary-status: $(STAMP)
	$(PY) tools/canary.py status

canary-promote: $(STAMP)
	$(PY) tools/canary.py promote

canary-rollback: $(STAMP)
	$(PY) tools/canary.py rollback

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache node_modules fleet/web/static/vendor
