# Everything runs from .venv, created from the repo's own files. Needs only Python 3.11+
# and the system's PostgreSQL binaries (initdb, pg_ctl, postgres) for tests and the demo,
# a C compiler and Python's headers for the accelerators (setup.py; the tests need them),
# and Node.js with npm for the TimescaleDB test server (scripts/tsdb, pinned by its lock).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TSDB := scripts/tsdb
TSDB_STAMP := $(TSDB)/node_modules/.installed

.PHONY: install test lint bench demo demo-stop clean

install: $(STAMP) $(TSDB_STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard */*.c)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@$(BIN)/python -m wal.accelerators
	@touch $(STAMP)

$(TSDB_STAMP): $(TSDB)/package.json $(TSDB)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is required for the TimescaleDB test server: apt-get install nodejs npm (Debian/Ubuntu), dnf install nodejs npm, brew install node"; exit 1; }
	npm ci --prefix $(TSDB) --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $(TSDB_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint $(TSDB_STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	@for b in wal_append loader capture e2e tsdb archive; do \
	  if [ -f bench/$$b.py ]; then echo "== bench/$$b.py"; $(BIN)/python -m bench.$$b || exit 1; fi; \
	done
	@echo "results: bench/results.json"

demo: $(STAMP)
	$(BIN)/python -m scripts.demo

demo-stop: $(STAMP)
	$(BIN)/python -m scripts.demo --stop

clean:
	-@[ -x $(BIN)/python ] && $(BIN)/python -m scripts.demo --stop >/dev/null 2>&1 || true
	rm -rf $(VENV) $(TSDB)/node_modules .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info build
	rm -f */*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
