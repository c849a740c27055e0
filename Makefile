# SpineSeg: the two set-up commands are `make run` and `make test` (each creates .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch backend's test venv: torch + torchvision (the bench pins) and what mrcnn imports,
# no TensorFlow. The backend tests run their torch subprocess in it (MRCNN_TORCH_PYTHON).
TORCH_VENV := .venv-torch
TORCH_STAMP := $(TORCH_VENV)/.installed
TORCH_ENV = MRCNN_TORCH_PYTHON=$(abspath $(TORCH_VENV))/bin/python

.PHONY: run test test-fast torch-venv lint bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## run: start the Streamlit app on http://localhost:8501 (this machine only; to serve others
## on the network: make run HOST=0.0.0.0, behind a proxy with authentication)
HOST ?= 127.0.0.1
run: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.address $(HOST)

$(TORCH_STAMP): requirements.txt
	test -x $(TORCH_VENV)/bin/python || $(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install --quiet --no-compile $(BENCH_TORCH) $$(grep -E \
		'^(keras|numpy|h5py|scikit-image|opencv-python-headless|tomli-w)[=<>]' requirements.txt)
	touch $(TORCH_STAMP)

torch-venv: $(TORCH_STAMP)

## test: the whole test suite (slow training tests included, torch backend in .venv-torch),
## as CI runs it
test: $(STAMP) $(TORCH_STAMP)
	bash scripts/install-browser.sh
	$(TORCH_ENV) $(PY) -m pytest

## test-fast: everything but the slow training tests (torch ops too once .venv-torch exists)
test-fast: $(STAMP)
	$(if $(wildcard $(TORCH_STAMP)),$(TORCH_ENV)) $(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

## bench: speed benchmarks, ours vs torchvision (results in benchmarks/RESULTS.md)
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: bench-venv
# A second venv with torch + torchvision beside the project requirements, so both models run
# in one process (git-ignored; created from nothing, refreshed when requirements change).
$(BENCH_STAMP): requirements.txt requirements-dev.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r requirements.txt $(BENCH_TORCH) \
		"$$(grep -E '^jax\[cpu\]==' requirements-dev.txt)"
	touch $(BENCH_STAMP)

bench-venv: $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) $(TORCH_VENV) .pytest_cache .ruff_cache
