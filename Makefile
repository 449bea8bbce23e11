# Segmenter: make help lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The suite runs its test files on this many processes (-n 0: one process, no xdist); each
# process starts its own broker and Redis. Files stay whole on one process (--dist loadfile).
PYTEST_WORKERS ?= 2
PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration test-e2e test-reliability lint format bench clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv with the project and its test extras

run: $(STAMP) ## start the embedded stack with the default rules, a year of history and live traffic
	$(BIN)/segmenter up --history 12 --generate 50

test: $(STAMP) ## run the whole suite (unit, integration, e2e) against a real broker and Redis
	$(BIN)/pytest -q $(PARALLEL) $(PYTEST_ARGS)

test-unit: $(STAMP) ## pure unit tests only
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) ## integration tests (real broker, real Redis)
	$(BIN)/pytest -q $(PARALLEL) tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP) ## end-to-end tests of the CLI and the whole stack
	$(BIN)/pytest -q $(PARALLEL) tests/e2e $(PYTEST_ARGS)

test-reliability: $(STAMP) ## crash test against a reference model (long; not part of make test)
	RELIABILITY=1 $(BIN)/pytest -q tests/reliability -s

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check streams tests
	$(BIN)/ruff format --check streams tests
	$(BIN)/mypy streams

format: $(STAMP) ## apply ruff formatting and fixes
	$(BIN)/ruff check --fix streams tests
	$(BIN)/ruff format streams tests

bench: $(STAMP) ## the performance harness
	$(BIN)/segmenter bench

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .segmenter *.egg-info
