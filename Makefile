# finpipe's front door. Every target installs what it needs first:
# uv (pinned, into the cache), the locked virtualenv, then the infrastructure artifacts.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
PYTHON ?= python3
CACHE_DIR := $(or $(FINPIPE_CACHE_DIR),$(HOME)/.cache/finpipe)
UV_HOME := $(CACHE_DIR)/tools/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
VENV := .venv
STAMP := $(VENV)/.finpipe-synced
INFRA := $(VENV)/bin/finpipe-infra
PYTEST_ARGS ?=
# `make test` spreads the suite over this many pytest processes, each with its own Kafka,
# MinIO and ports (tests/conftest.py): most of a drill is waiting, which overlaps. With two
# the two cores were a third idle; three keep them busier (docs/benchmarks.md, the suite).
PYTEST_WORKERS ?= 3

.PHONY: help up down status logs test unit lint format provision migrate-lake

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "finpipe needs Python 3.11+: set PYTHON=/path/to/python3.11")'
	@echo "[finpipe] installing uv $(UV_VERSION) into $(UV_HOME)"
	@$(PYTHON) -m venv "$(UV_HOME)"
	@"$(UV_HOME)/bin/pip" install --disable-pip-version-check -q "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock | $(UV)
	@echo "[finpipe] installing the locked Python packages into $(VENV) (first time: ~1 GB, a minute or two)"
	@UV_PYTHON=$(PYTHON) $(UV) sync --frozen
	@touch $@

provision: $(STAMP) ## fetch/build Kafka, MinIO, Spark's jars, and the tests' Chromium, Docker Compose, Delta reader and Prometheus
	@$(INFRA) provision --browser --compose --delta-spark --prometheus

up: $(STAMP) ## start the platform on loopback
	@$(INFRA) up

down: $(STAMP) ## stop everything `make up` started
	@$(INFRA) down

status: $(STAMP) ## show what runs, where, and its log file
	@$(INFRA) status

migrate-lake: $(STAMP) ## convert a lake of the pre-Delta layout into Delta tables, once (platform down)
	@$(INFRA) migrate-lake

logs: $(STAMP) ## follow the logs of every component
	@$(INFRA) logs

lint: $(STAMP) ## ruff check, format check, and the dependency rule (import-linter)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/lint-imports

test: provision lint ## the whole suite: unit, integration and drills against real services
	@$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

unit: $(STAMP) ## only the unit tests: no service is started or installed
	@$(VENV)/bin/pytest -m "not integration and not e2e" $(PYTEST_ARGS)

format: $(STAMP) ## apply ruff's formatting and fixes
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .
