# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The web UI's browser libraries: npm installs what package-lock.json pins, then they are copied into the
# package (git-ignored) so that a wheel carries them; nothing is fetched from a CDN at run time.
WEB_VENDOR := fleet/web/static/vendor/.installed

.PHONY: run test lint format bench bench-quick bench-codec bench-ingest bench-ingest-processes bench-sync bench-api \
        bench-login bench-fleet-page bench-live bench-growth bench-bus bench-storage \
        venv web clean system-deps help canary-status canary-promote canary-rollback \
        health-check smoke-test logs monitor emergency-logs daily-ops security-check perf-check maintenance

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

## make lint: ruff format --check, ruff check, mypy.
lint: $(STAMP)
	$(VENV)/bin/ruff format --check fleet tests bench tools
	$(VENV)/bin/ruff check fleet tests bench tools
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format fleet tests bench tools
	$(VENV)/bin/ruff check --fix fleet tests bench tools

# Every benchmark of `make bench`, in the order they run. A new benchmark: a `bench-<name>` target below, its
# script taking --quick and writing through bench/common.py, and one line here and in BENCH_QUICK_SCRIPTS.
# bench_ingest_processes.py runs as the second step of bench-ingest (no target of its own in `make bench`).
BENCH_TARGETS := bench-codec bench-ingest bench-sync bench-api bench-login bench-live bench-fleet-page bench-growth \
        bench-bus bench-storage
# Longest first: bench-quick runs three at a time (much of a quick run waits on process and database start-up,
# browser windows and fsync: all eleven used about 155 s of CPU, PostgreSQL's not counted, in 113 s on 2 cores).
BENCH_QUICK_SCRIPTS := bench/bench_growth.py bench/bench_fleet_page.py bench/bench_ingest_processes.py \
        bench/bench_ingest.py bench/bench_bus.py bench/bench_live.py bench/bench_login_timing.py \
        bench/bench_api.py bench/bench_storage.py bench/bench_codec.py bench/bench_sync.py

## make bench: every benchmark, full mode; JSON and plots in bench/results/ (docs/PERFORMANCE.md).
# Each writes <name>.json and <name>-<UTC timestamp>.json; goes on past a failure or a missed target, fails at the end.
bench: $(STAMP) $(WEB_VENDOR) system-deps
	$(MAKE) -k $(BENCH_TARGETS)

## make bench-quick: every benchmark small and short, targets not enforced (a smoke test of the benchmarks).
# Results in bench/results/<name>-quick.json (git-ignored); a script without --quick yet is skipped, said so.
bench-quick: $(STAMP) $(WEB_VENDOR) system-deps
	@started=$$(date +%s); \
	$(MAKE) --no-print-directory -k -j3 $(patsubst bench/%.py,quick-%,$(BENCH_QUICK_SCRIPTS)); rc=$$?; \
	echo "bench-quick: $$(( $$(date +%s) - started )) s"; exit $$rc

# One quick run: quiet unless it fails (its stderr's last lines then); a script without --quick is skipped.
quick-%:
	@script=bench/$*.py; log=bench/results/$*-quick-stderr.tmp; started=$$(date +%s); \
	if ! grep -q -- '"--quick"\|add_quick_argument' $$script; then echo "== $$script: no --quick mode, skipped"; exit 0; fi; \
	if $(PY) $$script --quick > /dev/null 2> $$log; then \
	  echo "$$(grep -h ': wrote ' $$log || echo "== $$script: done") ($$(( $$(date +%s) - started )) s)"; rm -f $$log; \
	else rc=$$?; echo "== $$script --quick FAILED ($$rc):"; tail -n 20 $$log; rm -f $$log; exit $$rc; fi

bench-codec: $(STAMP)
	$(PY) bench/bench_codec.py

## make bench-ingest: one ingest process (bench_ingest.py), then 1, 2 and 4 processes on one port.
bench-ingest: $(STAMP)
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_ingest_processes.py

## make bench-ingest-processes: 1, 2 and 4 ingest processes sharing one port (QUICK=1: 5 s per count).
bench-ingest-processes: $(STAMP)
	$(PY) bench/bench_ingest_processes.py $(if $(QUICK),--quick)

bench-sync: $(STAMP)
	$(PY) bench/bench_sync.py

## make bench-api: API latency (tools/perf_sanity.py --spawn) against /health measured on the same server.
bench-api: $(STAMP)
	$(PY) bench/bench_api.py

## make bench-bus: the live bus (PostgreSQL NOTIFY, Redis, NATS) fanned out to 4 processes; bench/results/bus.json.
bench-bus: $(STAMP)
	$(PY) bench/bench_bus.py

## make bench-storage: bytes on disk per record through the real write paths; bench/results/storage.json.
bench-storage: $(STAMP)
	$(PY) bench/bench_storage.py

bench-login: $(STAMP)
	$(PY) bench/bench_login_timing.py

## make bench-growth: growth curves (connections, rate, vehicles, history, disk) as growth.json and PNG plots.
bench-growth: $(STAMP)
	$(PY) bench/bench_growth.py

## make bench-fleet-page: the fleet page with 5,000 vehicles in headless Chromium (first render, main-thread time).
bench-fleet-page: $(STAMP) $(WEB_VENDOR) system-deps
	$(PY) bench/bench_fleet_page.py

## make bench-live: 1,000 WebSocket fleet viewers with trackers streaming (bench/results/live.json).
# The fleet page in Chromium is bench-fleet-page (`bench/bench_live.py` alone runs both).
bench-live: $(STAMP) $(WEB_VENDOR) system-deps
	$(PY) bench/bench_live.py --skip-fleet-page

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

## make help: this list.
help:
	@sed -n 's/^## make \([^:]*\): \(.*\)/  \1\t\2/p' $(MAKEFILE_LIST) | awk -F'\t' '{printf "%-22s %s\n", $$1, $$2}'
	@printf '  %-20s %s\n' "runbook-<name>" "print a runbook; names: $$(ls runbooks | sed 's/^[0-9]*-//; s/\.md$$//' | tr '\n' ' ')"

# --- operations (seed 000): run on the server's host with the server's environment ----------------------
FLEET := $(VENV)/bin/fleet

## make health-check: /health, /ready and the key numbers of the running server (non-zero when not ready).
health-check: $(STAMP)
	$(FLEET) check
	$(FLEET) ops health

## make smoke-test: end-to-end smoke test of the running server (playbooks/smoke.sh).
smoke-test: $(STAMP)
	FLEET=$(FLEET) PYTHON=$(PY) bash playbooks/smoke.sh

## make runbook-NAME: print runbooks/NN-NAME.md (e.g. make runbook-no-frames).
runbook-%:
	@f=$$(ls runbooks/[0-9]*-$*.md 2>/dev/null | head -n 1); \
	if [ -z "$$f" ]; then echo "no runbook '$*'; try: make help" >&2; exit 2; fi; cat "$$f"

## make logs: follow the server log, readable (LEVEL=warning to filter).
logs: $(STAMP)
	$(FLEET) ops logs --follow --level $(or $(LEVEL),info)

## make monitor: live terminal summary of the key metrics (Ctrl+C to leave).
monitor: $(STAMP)
	$(FLEET) ops monitor

## make emergency-logs: one archive with logs, recent errors, server answers and database activity.
emergency-logs: $(STAMP)
	$(FLEET) ops emergency-logs

## make daily-ops: the daily check (readiness, last 24 h, silent trackers, partitions, backups, disk, certs).
daily-ops: $(STAMP)
	$(FLEET) ops daily

## make security-check: public bindings, default secrets, forced RLS, role flags, pip-audit.
security-check: $(STAMP)
	$(FLEET) ops security

## make perf-check: latency percentiles of the running server, then the API perf sanity tool.
perf-check: $(STAMP)
	$(FLEET) ops perf
	$(PY) tools/perf_sanity.py --spawn --runs 200 --concurrency 20

## make maintenance: partitions ahead, retention, ANALYZE (what the maintenance role does hourly), now.
maintenance: $(STAMP)
	$(FLEET) ops maintenance
