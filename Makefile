# The two commands a newcomer needs: `make demo` and `make test`. Both create (or reuse) .venv/.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch, CPU build. PyPI's Linux torch wheels are CUDA builds (plus about 15 nvidia-* wheels,
# over 1 GB); the CPU build is on PyTorch's own index. A torch wheel pip can already see
# locally (a wheelhouse in pip's find-links, as on the project's build machines) is used first;
# otherwise it comes from TORCH_INDEX. For a GPU build: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH       ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test test-all lint setup clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-index --no-deps '$(TORCH)' 2>/dev/null \
	  || $(PY) -m pip install --quiet '$(TORCH)' --index-url $(TORCH_INDEX)
	$(PY) -m pip install --quiet -e '.[test,lint]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m agentir restore examples/degraded -o out/demo
	$(PY) -m agentir.demo_report examples/degraded out/demo examples/clean -o out/demo/before_after.png

test: $(STAMP)
	$(PY) -m pytest

# Everything, slow tests included (about 10 more minutes); gpu tests run where torch sees CUDA
# and skip elsewhere.
test-all: $(STAMP)
	$(PY) -m pytest -m 'slow or not slow'

# ruff (lint and format check) and mypy, configured in pyproject.toml; .ci/run runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
