# Two entry points for a newcomer: `make audit` (main job) and `make test`.
# Both create .venv when it is missing. torch is installed first, pinned, so that
# pip takes the local CPU build instead of resolving a CUDA build (the pin is this
# development environment's choice; the package itself asks for torch>=2.1 in its extras).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup audit demo test docs slow bench bench-audit bench-throughput bench-returns power scale accuracy fpr catalogue lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[all,test,docs]"
	touch $(STAMP)

setup: $(STAMP)

audit: $(STAMP)
	$(VENV)/bin/pgtheory audit

demo: $(STAMP)
	$(VENV)/bin/pgtheory demo

# import-linter contracts of importlinter.ini, checked on the installed layout by
# tools/lint_imports.py (the package-dir mapping hides the subpackages from plain lint-imports)
# the suite runs on one pytest-xdist worker per core, each torch process on one thread
# (small networks: faster, and the workers do not oversubscribe the cores)
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) tools/lint_imports.py
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto

# statistical false-positive measurements, deselected by default (pyproject addopts)
slow: $(STAMP)
	$(PY) -m pytest -m slow

bench: $(STAMP)
	mkdir -p .benchmarks
	$(PY) -m pytest -m bench tests/benchmarks --benchmark-only --benchmark-columns=min,median,mean,rounds --benchmark-json=.benchmarks/core.json
	$(PY) tests/benchmarks/ratios.py .benchmarks/core.json
	OMP_NUM_THREADS=1 $(PY) tests/benchmarks/core_ratios.py --rounds 100 --out .benchmarks/core-ratios.json

bench-audit: $(STAMP)
	$(PY) tests/benchmarks/audit_time.py

bench-throughput: $(STAMP)
	$(PY) tests/benchmarks/ppo_throughput.py

bench-returns: $(STAMP)
	$(PY) tests/benchmarks/mujoco_returns.py --algos ppo,trpo,sb3-trpo --envs Hopper-v5 --seeds 0,1,2 --steps 1000000 --jobs 2 --out runs/mujoco

power: $(STAMP)
	$(VENV)/bin/pgtheory audit --power

scale: $(STAMP)
	$(VENV)/bin/pgtheory scale --budget small --out runs/scale --report-dir docs/scale

accuracy: $(STAMP)
	$(PY) tests/benchmarks/accuracy.py

fpr: $(STAMP)
	$(PY) tests/benchmarks/false_positive_rate.py 100

catalogue: $(STAMP)
	$(PY) -m pytest -m catalogue tests/test_sb3_audit.py

# the documentation site (MkDocs Material, API pages from the docstrings) into site/
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
