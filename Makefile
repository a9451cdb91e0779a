# Everything a new user needs: `make demo` runs the nightly reconciliation against the built-in
# gateway simulator, `make test` runs lint and the test suite. Both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint fmt demo bench chaos sim db-upgrade clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The suite runs on TEST_WORKERS pytest-xdist processes: most of its time is spent waiting (IBKR's
# pacing against the simulator, Prefect's server), not computing, so 4 workers pay off on 2 cores.
# Tests that share a module's fixture stay on one worker (tests/conftest.py). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 4

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m flows.demo

bench: $(STAMP)
	$(PY) bench/pacing.py
	$(PY) bench/ledger_ingest.py
	$(PY) bench/reconcile.py
	$(PY) bench/flex_parse.py
	$(PY) bench/flex_book.py
	$(PY) bench/contract_info.py
	$(PY) -c 'import ibind' 2>/dev/null || $(PY) -m pip install -e '.[peer]'
	$(PY) bench/peer_ibind.py

# Not part of `make test` (~15-25 min): kill -9 during nightly runs on SQLite and PostgreSQL, the fault
# storms, 10,000 fuzzed payloads; prints one table, exits non-zero on anything lost, duplicated or wrong.
# CHAOS_ARGS="--seed N" repeats a run's kill moments (see docs/chaos.md).
chaos: $(STAMP)
	$(PY) -m bench.chaos $(CHAOS_ARGS)

sim: $(STAMP)
	$(VENV)/bin/ibkr-tasks sim --port 5000 --seed 7 --accounts 3

db-upgrade: $(STAMP)
	$(VENV)/bin/ibkr-tasks db upgrade

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .prefect-home ibkr_ledger.db
