# The two commands a newcomer needs: `make demo` and `make test`. Both create (or reuse) .venv/.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all setup clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel; an unpinned torch could pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m agentir restore examples/degraded -o out/demo
	$(PY) -m agentir.demo_report examples/degraded out/demo examples/clean -o out/demo/before_after.png

test: $(STAMP)
	$(PY) -m pytest

# Everything, including tests marked slow (not gpu/broker unless available).
test-all: $(STAMP)
	$(PY) -m pytest -m 'not gpu and not broker'

clean:
	rm -rf out .pytest_cache
