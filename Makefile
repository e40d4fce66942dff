# Optiflow: `make run` trains on the shipped data, `make test` runs the test suite. `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV     := .venv
BIN      := $(VENV)/bin
PYTHON   ?= python3
INSTALLED     := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.dev-installed

# Everything local and quiet: no telemetry, Prefect state and matplotlib cache inside the repo.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PREFECT_HOME ?= $(CURDIR)/.prefect
export MPLCONFIGDIR ?= $(CURDIR)/.prefect/matplotlib
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export PREFECT_LOGGING_EXTRA_LOGGERS := optiflow
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW := ignore
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: help install dev dvc-init run test test-fast lint lock audit repro status rollback predict serve-api serve-mlflow \
	mlflow-ui dvc-yaml bench bench-report bench-pipeline bench-tuning bench-compression bench-monitoring bench-serving \
	bench-scale simulate-drift monitor serve \
	stack-up stack-down stack-status run-stack large clean

STACK_ENV := $(or $(OPTIFLOW_STACK_DIR),$(CURDIR)/.stack)/stack.env
ROWS      ?= 1000000
LARGE     ?= data/large/churn-$(ROWS).parquet

help: ## list the targets (bold names in a terminal, plain text when piped)
	@if [ -t 1 ]; then bold='\033[1m'; plain='\033[0m'; fi; \
	awk -v bold="$$bold" -v plain="$$plain" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-12s%s %s\n", bold, $$1, plain, $$2}' $(MAKEFILE_LIST)

$(INSTALLED): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

$(DEV_INSTALLED): $(INSTALLED) requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.lock
	@touch $@

install: $(INSTALLED) ## create .venv and install the pinned set (requirements.lock)
	@echo "optiflow is in $(BIN): run 'source $(BIN)/activate' to use it from this shell"

dev: $(DEV_INSTALLED) ## install the dev tools too (requirements-dev.lock)

dvc-init: $(INSTALLED) ## initialise DVC (and git) here if this is not a DVC repo yet
	@test -d .git || git init --quiet
	@test -d .dvc || { $(BIN)/dvc init --quiet && $(BIN)/dvc config core.analytics false && $(BIN)/dvc config core.check_update false; }

run: $(INSTALLED) dvc-init ## run the training flow on the data in params.yaml and print a summary
	$(BIN)/optiflow train

# Tests run on PYTEST_WORKERS processes (pytest-xdist; a file's tests stay on one worker, so its module fixtures are
# built once); PYTEST_ARGS adds options, e.g. PYTEST_ARGS="--durations=15" (what CI prints) or "-x".
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

test: $(DEV_INSTALLED) ## run the whole test suite (unit, flow and integration tests) on PYTEST_WORKERS processes
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The fast level names its folders rather than deselecting `-m integration`: deselected modules are still imported,
# and the integration tests' imports (a Prefect server, skops, onnx) cost each worker about 6 s.
test-fast: $(DEV_INSTALLED) ## the fast level for every change: unit, data and model tests (no services)
	$(BIN)/pytest tests/unit tests/data tests/model -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(DEV_INSTALLED) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lock: $(INSTALLED) ## add the sha256 of every locked file to requirements*.lock (run after changing a pin)
	$(BIN)/python -m tools.lock

audit: $(DEV_INSTALLED) ## pip-audit the locked sets; fails on a known vulnerability, reports (not fails) when offline
	$(BIN)/python -m tools.audit

repro: $(INSTALLED) dvc-init ## reproduce the pipeline with DVC (same stage functions as the flow)
	$(BIN)/dvc repro

status: $(INSTALLED) ## registered model versions, aliases and metrics
	$(BIN)/optiflow status

rollback: $(INSTALLED) ## move `champion` back to the version holding `previous` (REASON="why")
	$(BIN)/optiflow rollback --reason "$(or $(REASON),not given)"

predict: $(INSTALLED) ## batch-score a file with the champion (INPUT=in.csv OUTPUT=out.parquet; rejects beside it)
	$(BIN)/optiflow predict --input "$(or $(INPUT),data/raw/wa_churn.csv.gz)" --output "$(or $(OUTPUT),reports/predictions.parquet)"

serve-api: $(INSTALLED) ## serve the champion with micro-batching at http://127.0.0.1:8000 (POST /predict)
	$(BIN)/optiflow serve-api

serve-mlflow: $(INSTALLED) ## the same champion, verified, through `mlflow models serve` at http://127.0.0.1:5001
	rm -rf .optiflow/served-model && $(BIN)/optiflow export-model --output .optiflow/served-model
	$(BIN)/mlflow models serve -m .optiflow/served-model --env-manager local -h 127.0.0.1 -p 5001

mlflow-ui: $(INSTALLED) ## browse runs and the registry at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

simulate-drift: $(INSTALLED) ## write drifted labelled batches from the pool (rows no model trains on) to data/batches
	$(BIN)/optiflow simulate-drift

monitor: $(INSTALLED) ## check new batches in data/batches for drift; retrain when the decision says so
	$(BIN)/optiflow monitor

serve: $(INSTALLED) ## serve the training and monitoring deployments (start `prefect server start` first)
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(BIN)/optiflow serve

bench-monitoring: $(INSTALLED) ## drift check time/memory at 7k-1M rows, false alarms, detection rate and delay
	OMP_NUM_THREADS=1 $(BIN)/python bench/monitoring.py

dvc-yaml: $(INSTALLED) ## regenerate dvc.yaml from tasks/stages.py
	$(BIN)/optiflow dvc-yaml

bench: $(INSTALLED) ## every benchmark (about 1.5 h on 2 cores), then docs/benchmarks.md from bench/results/*.json
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/scale.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/monitoring.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/tuning.py
	$(BIN)/python bench/report.py

bench-report: $(INSTALLED) ## re-render docs/benchmarks.md (tables and PNG plots) from bench/results/*.json
	$(BIN)/python bench/report.py

bench-pipeline: $(INSTALLED) ## pipeline benchmark: cold run, cached re-run, no-op dvc repro, Prefect overhead
	$(BIN)/python bench/pipeline.py

bench-tuning: $(INSTALLED) ## tuning benchmark: samplers, pruning, parallel trials
	$(BIN)/python bench/tuning.py

bench-compression: $(INSTALLED) ## compression benchmark: int8 (torch, ONNX Runtime), pruning, distillation, matmul peak
	$(BIN)/python bench/compression.py

bench-serving: $(INSTALLED) ## serving benchmark: ONNX vs Python, start-up, chunked scoring, memory, latency, steady load
	$(BIN)/python bench/serving.py

stack-up: $(INSTALLED) ## start PostgreSQL, MLflow server and Prefect server on 127.0.0.1 (then: source .stack/stack.env)
	$(BIN)/optiflow stack up

stack-down: $(INSTALLED) ## stop the servers and PostgreSQL (their data is kept)
	$(BIN)/optiflow stack down

stack-status: $(INSTALLED) ## which stack services are running, and where
	$(BIN)/optiflow stack status

run-stack: $(INSTALLED) dvc-init ## train on the stack: Dask workers, Optuna + MLflow + Prefect on PostgreSQL
	@test -f $(STACK_ENV) || { echo "no $(STACK_ENV): run 'make stack-up' first"; exit 2; }
	source $(STACK_ENV) && $(BIN)/optiflow train --task-runner dask -S "tune.storage=$$OPTIFLOW_TUNE_STORAGE"

large: $(INSTALLED) ## write a bigger table resampled from the shipped one (ROWS=1000000 -> data/large/)
	$(BIN)/optiflow make-large --rows $(ROWS) --output $(LARGE)

bench-scale: $(INSTALLED) ## scale benchmark: tuning on 1/2 workers and 2 processes, stages by data size, Optuna on PG
	$(BIN)/python bench/scale.py

clean: ## remove pipeline outputs, tracking data and Prefect state (keeps .venv)
	rm -rf .prefect mlflow.db mlartifacts .optiflow .optiflow-registry.lock .optiflow-training.lock reports models cache data/interim data/processed data/reference \
		data/batches data/monitored data/retraining
