# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv if needed,
# install the pinned dependency set (requirements.lock), fetch the embedded data, then run.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
STAMP := $(VENV)/.installed
RUN_DIR ?= runs
PRESET ?= demo
UI_PORT ?= 5000

.PHONY: setup data demo test run ui lock benchmarks clean-runs help

help:
	@echo "make demo        set up, fetch data, run the whole pipeline on the demo preset"
	@echo "make test        set up, fetch data, run the test suite"
	@echo "make run PRESET=tiny ARGS='--rerun corpus.quality'   run with CLI arguments"
	@echo "make ui          open the MLflow UI on http://127.0.0.1:$(UI_PORT)"
	@echo "make benchmarks  corpus and toxicity throughput tables"

$(PYTHON):
	$(PY) -m venv $(VENV)

# torch first, by its exact version: pip takes the CPU build on this disk (an unpinned torch
# would pull a multi-GB CUDA build). Everything else comes from the lock file.
$(STAMP): requirements.lock pyproject.toml | $(PYTHON)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements.lock
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

data: setup
	$(PYTHON) -m tasks.data.fetch

demo: data
	$(PYTHON) -m flows run --preset demo
	@echo
	@echo "Results: datasets under $(RUN_DIR)/data, artifacts under $(RUN_DIR)/artifacts."
	@echo "MLflow UI: run 'make ui' and open http://127.0.0.1:$(UI_PORT)"

run: data
	$(PYTHON) -m flows run --preset $(PRESET) $(ARGS)

test: data
	$(PYTHON) -m pytest $(PYTEST_ARGS)

ui: setup
	$(VENV)/bin/mlflow server --backend-store-uri sqlite:///$(abspath $(RUN_DIR))/mlflow/mlflow.db \
		--host 127.0.0.1 --port $(UI_PORT) --workers 1

benchmarks: data
	$(PYTHON) benchmarks/corpus_throughput.py
	$(PYTHON) benchmarks/toxicity_throughput.py

# Regenerate the lock from a venv that has the direct dependencies of pyproject.toml.
lock: setup
	$(PIP) freeze --exclude-editable | sed -e 's/^torch==\(.*\)+cpu$$/torch==\1/' \
		| grep -v '^llama2-recipe' > requirements.lock

clean-runs:
	rm -rf $(RUN_DIR)
