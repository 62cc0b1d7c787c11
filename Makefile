# dsn-lab: two commands do everything -- `make demo` and `make test`.
# Each creates .venv when missing and installs the package into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LOCK := requirements/lock.txt
PYTEST_WORKERS ?= 2

.PHONY: install sysdeps demo demo-quick figures course-results test test-fast front-door lint format notebooks lock bench clean

# Installs the exact versions of requirements/lock.txt (runtime + [lab] + [dev]), then the package itself
# without resolving again, so a run today and a run next year get the same packages. `pip install -e .` is the
# unpinned route (README). Where the lock cannot install (another OS or Python), say so and fall back.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "dsn-lab needs Python >= 3.10 (found " + sys.version.split()[0] + "); set PYTHON=python3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "make: installing the locked packages of $(LOCK) into $(VENV) (a few minutes the first time; on Linux torch is the CUDA build, about 6 GB)"
	$(PY) -m pip install --quiet -r $(LOCK) || { echo "make: the lock ($(LOCK), made on Linux x86_64 / CPython 3.11) did not install here; installing unpinned: pip install -e '.[lab,dev]'" >&2; $(PY) -m pip install -e ".[lab,dev]"; }
	$(PY) -m pip install --quiet --no-deps -e .
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

# Regenerates the demo figures committed in figures/ (the README shows them); `make demo` writes its own into
# its run folder and leaves figures/ alone.
figures: install
	$(PY) -c "from dsn_lab.plots import plot_architecture; plot_architecture(save_to='figures/dsn_architecture.png')"
	$(PY) -m dsn_lab demo --baseline --figures-dir figures

# The full runs (QUICK = False) of notebooks 03-06 whose figures and results are committed in figures/ and
# results/ (more than two hours on a 2-core CPU; interrupted, it resumes). COURSE_ARGS, e.g. "--runs-dir DIR".
course-results: install
	$(PY) scripts/course_full_runs.py $(COURSE_ARGS)

test: install sysdeps
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -ra --durations=25 $(PYTEST_ARGS)

# A newcomer's first command, walked for real: fresh clone, empty HOME, Debian's WordNet hidden, make demo.
front-door:
	bash scripts/front_door_check.sh

test-fast: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" -ra $(PYTEST_ARGS)

# ruff lints and checks the formatting of the package, tests, scripts and the notebooks' paired .py sources;
# lint-imports checks the one-way house (pyproject.toml [tool.importlinter]).
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
	$(PY) -m jupytext --sync notebooks/[0-9][0-9]_*.ipynb

# notebooks/NN_name.py is what you edit (any editor, or Jupyter with jupytext installed); this brings the paired
# .ipynb up to date, and the reverse when the .ipynb is the newer one. tests/test_notebooks.py checks the pairs.
notebooks: install
	$(PY) -m jupytext --sync notebooks/[0-9][0-9]_*.ipynb

lock:
	bash scripts/lock_requirements.sh

bench: install
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_method.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
