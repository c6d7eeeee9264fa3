# Two entry points for a newcomer: `make demo` (main job) and `make test`.
# Both create .venv when it is missing. torch is installed first, pinned, so that
# pip takes the local CPU build instead of resolving a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test bench accuracy fpr lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pgtheory demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: $(STAMP)
	mkdir -p .benchmarks
	$(PY) -m pytest -m bench tests/benchmarks --benchmark-only --benchmark-columns=min,median,mean,rounds --benchmark-json=.benchmarks/core.json
	$(PY) tests/benchmarks/ratios.py .benchmarks/core.json

accuracy: $(STAMP)
	$(PY) tests/benchmarks/accuracy.py

fpr: $(STAMP)
	$(PY) tests/benchmarks/false_positive_rate.py 100

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
