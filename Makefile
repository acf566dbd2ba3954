# Every target sets itself up: a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
LINTED := flowhooks pytest_flowhooks.py tests examples benchmarks scripts

.PHONY: demo test test-ray test-prefect lint typecheck pytest docs package-check bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev,bench]'
	touch $(STAMP)

# The demo installs only what it uses: the command line, SQLite history, HTTP alerts.
$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cli,sql,http]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(PY) examples/demo.py
	$(PY) -m flowhooks history

test: $(STAMP)
	bash scripts/ensure-postgres.sh
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)
	$(PY) -m mypy flowhooks pytest_flowhooks.py scripts/check_dist.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict
	$(MAKE) --no-print-directory package-check
	$(PY) -m benchmarks --quick --output-dir $(VENV)/bench-smoke
	$(PY) -m coverage run -m pytest
	$(PY) -m coverage report
	$(MAKE) --no-print-directory test-prefect
	$(MAKE) --no-print-directory test-ray

# RayRunner's tests: ray is large, so it is not in `all`; this installs it and runs them
# (after the main run, which skips them while ray is not installed).
# Prefect pins apprise<2.1 while the notify extra needs 2.3: its tests run in a
# venv of their own, with the real Prefect (ephemeral mode, no server).
PREFECT_VENV := .venv-prefect
$(PREFECT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PREFECT_VENV)
	$(PREFECT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PREFECT_VENV)/bin/python -m pip install --quiet -e '.[prefect]' \
		'pytest>=8' 'pytest-asyncio>=0.24' 'pytest-timeout>=2.3' 'hypothesis>=6.100'
	touch $@

test-prefect: $(PREFECT_VENV)/.installed
	$(PREFECT_VENV)/bin/python -m pytest -q -p no:cacheprovider -k prefect \
		tests/integrations/test_prefect.py tests/test_examples_kedro_prefect.py

test-ray: $(STAMP)
	$(PY) -m pip install --quiet -e '.[ray]'
	$(PY) -m pytest -m ray tests/runners

lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(PY) -m mypy flowhooks pytest_flowhooks.py scripts/check_dist.py

pytest: $(STAMP)
	$(PY) -m pytest

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Builds the sdist and, from it, the wheel in a temporary directory, then checks both.
package-check: $(STAMP)
	dist=$$(mktemp -d) && trap 'rm -rf "$$dist"' EXIT && \
	$(PY) -m build --outdir "$$dist" . && \
	$(PY) -m twine check --strict "$$dist"/* && \
	$(PY) scripts/check_dist.py "$$dist"

bench: $(STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) $(PREFECT_VENV) site .pytest_cache .mypy_cache .ruff_cache .coverage .hypothesis flowhooks.db flowhooks.db-wal flowhooks.db-shm flowhooks-demo
