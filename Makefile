# SpineSeg: the two set-up commands are `make run` and `make test` (each creates .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## run: start the Streamlit app on http://localhost:8501
run: $(STAMP)
	$(VENV)/bin/streamlit run app.py

## test: the whole test suite (slow training tests included), as CI runs it
test: $(STAMP)
	bash scripts/install-browser.sh
	$(PY) -m pytest

## test-fast: everything but the slow training tests
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

## bench: speed benchmarks (results in benchmarks/RESULTS.md)
bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
