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

.PHONY: help install dev dvc-init run test test-fast lint audit repro status rollback mlflow-ui dvc-yaml bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(INSTALLED): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

$(DEV_INSTALLED): $(INSTALLED) requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	@touch $@

install: $(INSTALLED) ## create .venv and install the pinned set (requirements.lock)

dev: $(DEV_INSTALLED) ## install the dev tools too (requirements-dev.lock)

dvc-init: $(INSTALLED) ## initialise DVC (and git) here if this is not a DVC repo yet
	@test -d .git || git init --quiet
	@test -d .dvc || { $(BIN)/dvc init --quiet && $(BIN)/dvc config core.analytics false && $(BIN)/dvc config core.check_update false; }

run: $(INSTALLED) dvc-init ## run the training flow on the data in params.yaml and print a summary
	$(BIN)/optiflow train

test: $(DEV_INSTALLED) ## run the whole test suite (unit, flow and integration tests)
	$(BIN)/pytest

test-fast: $(DEV_INSTALLED) ## run the tests not marked slow
	$(BIN)/pytest -m "not slow"

lint: $(DEV_INSTALLED) ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

audit: $(DEV_INSTALLED) ## pip-audit the locked sets; fails on a known vulnerability, reports (not fails) when offline
	$(BIN)/python -m tools.audit

repro: $(INSTALLED) dvc-init ## reproduce the pipeline with DVC (same stage functions as the flow)
	$(BIN)/dvc repro

status: $(INSTALLED) ## registered model versions, aliases and metrics
	$(BIN)/optiflow status

rollback: $(INSTALLED) ## move `champion` back to the version holding `previous` (REASON="why")
	$(BIN)/optiflow rollback --reason "$(or $(REASON),not given)"

mlflow-ui: $(INSTALLED) ## browse runs and the registry at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

dvc-yaml: $(INSTALLED) ## regenerate dvc.yaml from optiflow/stages.py
	$(BIN)/optiflow dvc-yaml

bench: $(INSTALLED) ## pipeline benchmark: cold run, cached re-run, no-op dvc repro, Prefect overhead
	$(BIN)/python bench/pipeline.py

clean: ## remove pipeline outputs, tracking data and Prefect state (keeps .venv)
	rm -rf .prefect mlflow.db mlartifacts .optiflow-registry.lock reports models data/interim data/processed data/reference
