# Everything runs from .venv, created from the repo's own files. Needs only Python 3.11+
# and the system's PostgreSQL binaries (initdb, pg_ctl, postgres) for tests and the demo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint bench demo demo-stop clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	@for b in wal_append loader capture e2e archive; do \
	  if [ -f bench/$$b.py ]; then echo "== bench/$$b.py"; $(BIN)/python -m bench.$$b || exit 1; fi; \
	done
	@echo "results: bench/results.json"

demo: $(STAMP)
	$(BIN)/python -m scripts.demo

demo-stop: $(STAMP)
	$(BIN)/python -m scripts.demo --stop

clean:
	-@[ -x $(BIN)/python ] && $(BIN)/python -m scripts.demo --stop >/dev/null 2>&1 || true
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
