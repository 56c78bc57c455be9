# Pulse: `make dev` runs the whole stack natively (honcho + Procfile); `make up` runs it in Docker.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
PULSE := $(VENV)/bin/pulse
COMPOSE ?= docker compose
VAR   := $${PULSE_VAR_DIR:-var}

.PHONY: help setup dev check lint types lock test test-unit test-integration test-e2e demo bench chaos fuzz dead-letters env up compose-key down logs clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: ## venv + dependencies, database + migrations, RabbitMQ management plugin
	@scripts/setup

dev: setup ## run every process in the foreground (Ctrl-C stops them all); prints where the development API key and the Flower login are
	@$(PULSE) keys dev $(VAR)/dev-api-key
	@$(PULSE) flower-login $(VAR)/flower-login
	exec $(VENV)/bin/honcho start -f Procfile

check: lint types ## the quick loop (under a minute): ruff, mypy, then tests/unit
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

lint: ## ruff over the whole repository (rules in pyproject.toml)
	@scripts/setup --venv-only
	$(VENV)/bin/ruff check .

types: ## mypy: strict on shared/, checked on services/ (settings in pyproject.toml)
	@scripts/setup --venv-only
	$(VENV)/bin/mypy

# `uv pip compile` rather than `uv lock`: it writes plain requirements files that pip installs (scripts/setup,
# the Dockerfile, with this machine's pip settings), so nothing but this target needs uv. --universal: one lock
# for every platform and Python version pyproject.toml allows. The runtime lock is constrained by the dev lock,
# so the image runs the versions the tests ran. Without LOCK_ARGS=--upgrade the pins already there are kept.
lock: ## re-resolve requirements/*.lock after a pyproject.toml change (LOCK_ARGS=--upgrade: newest versions of everything)
	@scripts/setup --venv-only
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --custom-compile-command "make lock" \
		--quiet $(LOCK_ARGS) -o requirements/dev.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra monitoring --universal --custom-compile-command "make lock" \
		--quiet --constraint requirements/dev.lock -o requirements/runtime.lock
	@scripts/setup --venv-only

test: lint types ## ruff, mypy, bandit, then the whole suite against real Postgres, RabbitMQ, Redis, MongoDB-wire server and workers
	@scripts/setup --no-migrate
	$(VENV)/bin/bandit --quiet --recursive --severity-level medium services shared scripts
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit:
	@scripts/setup --no-migrate
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration:
	@scripts/setup --no-migrate
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e:
	@scripts/setup --no-migrate
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

demo: ## replay the guide's scenarios against the running stack
	$(PULSE) demo

chaos: ## mixed load under SIGKILLs and restarts on a private stack, then a reconciliation (CHAOS_ARGS="--duration 600")
	@scripts/setup --no-migrate
	$(PULSE) chaos $(CHAOS_ARGS)

fuzz: ## schemathesis, every check, against the running stack's OpenAPI document (FUZZ_EXAMPLES=200; no DELETE and no key management: your data and keys stay as they are)
	SCHEMATHESIS_HOOKS=scripts.schemathesis_hooks $(VENV)/bin/schemathesis run $${PULSE_API:-http://127.0.0.1:8000}/openapi/openapi.json --checks all \
		--max-examples $${FUZZ_EXAMPLES:-200} --workers 2 --exclude-method DELETE --exclude-path-regex '^/api/keys' \
		--header "Authorization: Bearer $${PULSE_API_KEY:-$$(cat $(VAR)/dev-api-key)}"

dead-letters: ## what failed for good: task, queue, reason, age, first error (pulse dead-letters --help)
	$(PULSE) dead-letters list

bench: ## every benchmark in bench/
	for b in bench/[!_]*.py; do $(PY) $$b || exit 1; done

env: ## write .env for docker compose with random passwords (kept when it exists)
	@scripts/make-env

up: env ## the same stack under docker compose (mongo:7, RabbitMQ with the UI, Mailpit, Flower); passwords from .env
	$(COMPOSE) up --build --detach --wait
	@echo "development API key: make compose-key"

compose-key: ## print the development API key of the compose stack
	@$(COMPOSE) run --rm --no-deps dev-key cat /keys/dev-api-key

down:
	$(COMPOSE) down

logs:
	$(COMPOSE) logs --follow

clean:
	rm -rf var .pytest_cache
