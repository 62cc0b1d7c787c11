# dsn-lab: two commands do everything -- `make demo` and `make test`.
# Each creates .venv when missing and installs the package into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

.PHONY: install sysdeps demo demo-quick test test-fast lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "dsn-lab needs Python >= 3.10 (found " + sys.version.split()[0] + "); set PYTHON=python3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Debian packages some tests use (WordNet 3.0, Chromium for the browser test). Best effort:
# where apt is not available the tests that need them skip and say why.
sysdeps:
	-bash scripts/install_system_deps.sh

demo: install
	$(PY) -m dsn_lab demo $(DEMO_ARGS)

demo-quick: install
	$(PY) -m dsn_lab demo --quick

test: install sysdeps
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -ra --durations=25 $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" -ra $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_method.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
