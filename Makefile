# Developer entry points. `make test` and `make demo` build .venv on first use.

PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PYTEST_ARGS ?=
WORKERS ?= 10
PORT ?= 3000

.PHONY: test js-test demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e '.[test]'
	touch $@

# The JS workspace (packages/*): npm ci when the lock file changes.
$(NODE_STAMP): package.json package-lock.json packages/mephisto-task/package.json
	npm ci --no-audit --no-fund
	touch $@

test: $(STAMP) $(NODE_STAMP)
	npm test
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

js-test: $(NODE_STAMP)
	npm test

demo: $(STAMP)
	MEPHISTO_SIMULATED_WORKERS=$(WORKERS) $(VENV)/bin/python examples/simple_static_task/run_task.py mephisto.architect.port=$(PORT)
	$(VENV)/bin/mephisto runs

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_db.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
