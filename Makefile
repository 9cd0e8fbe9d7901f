# aikeys — one entry point for people and CI. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: bench bench-scale crds fuzz help setup system-deps dev-deps venv control-plane binaries images node-clients browser open-webui lint format typecheck test unit integration dev dev-down dev-status cluster cluster-down cluster-status clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: system-deps venv binaries images node-clients browser open-webui ## Install everything the tests and dev stack need (idempotent)

system-deps: ## Debian packages: redis-server, prometheus, wrk, nginx-light, containerd, buildah, ... (apt-get, only when missing)
	@bash tools/setup-system.sh

dev-deps: ## Only the Debian packages the dev stack runs: redis-server, redis-tools (apt-get, only when missing)
	@bash tools/setup-system.sh --dev

venv: $(VENV)/.installed ## Python virtualenv in .venv: aikeys[dev] and the dev tools (dev/, aikeys-dev) editable

$(VENV)/.installed: pyproject.toml dev/pyproject.toml
	@echo "[aikeys setup] python virtualenv in $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]' -e ./dev
	@touch $@

node-clients: ## Node packages of the client tests (npm ci into ~/.cache/aikeys/node/, only when missing)
	@bash tools/node-clients.sh >/dev/null

browser: ## Debian's chromium and playwright-core for the browser tests (only when missing)
	@bash tools/browser-tests.sh >/dev/null

open-webui: ## Open WebUI for the client tests (pip into ~/.cache/aikeys/open-webui/, only when missing; 7.3 GB)
	@bash tools/open-webui.sh >/dev/null

control-plane: ## Build the control plane (etcd, kube-apiserver, kube-controller-manager, kubectl, helm) if missing
	@bash tools/k8s/build.sh

binaries: ## Build the control plane and the node's binaries (kubelet, CoreDNS, Traefik, ...) if missing
	@bash tools/k8s/build.sh --node

images: venv binaries ## Build the node's images (the Dockerfile's, the dev tools', Redis, CoreDNS, Traefik) if missing
	@$(BIN)/python -m aikeys_dev.devstack.images >/dev/null

lint: venv ## ruff (lint + format check)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: venv ## mypy (strict)
	$(BIN)/mypy

test: setup lint typecheck ## THE test command: installs what is missing, then ruff, mypy and pytest
	$(BIN)/pytest $(PYTEST_ARGS)

FUZZ_EXAMPLES ?= 2000
fuzz: setup ## The generative pipeline test at length (FUZZ_EXAMPLES requests; make test runs 100)
	AIKEYS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/integration/test_pipeline_fuzz.py $(PYTEST_ARGS)

unit: venv ## Only the fast tests that need no servers
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

crds: venv ## Regenerate crds/*.yaml from aikeys/resources.py
	$(BIN)/python -m aikeys.crds

BENCH_ARGS ?=
bench: setup ## Benchmarks (gateway vs nginx direct vs LiteLLM, upstream clients, ledger) into docs/benchmarks.md
	$(BIN)/python -m bench $(BENCH_ARGS)

SCALE_ARGS ?= --keys 100000 --allocations 1000 --create 10000 --active 10000
bench-scale: setup ## The control loop at scale (100,000 AIKeys, ~10 min) into docs/benchmarks.md; SCALE_ARGS to change
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

dev: dev-deps venv control-plane ## Start the local stack in the background and print how to use it
	@$(BIN)/aikeys-dev up

dev-down: venv ## Stop the local stack
	@$(BIN)/aikeys-dev down

dev-status: venv ## Is the stack running, and where
	@$(BIN)/aikeys-dev status

cluster: setup ## A real one-node cluster: the chart installed with helm, clients through the Ingress (root)
	@$(BIN)/python -m aikeys_dev.devstack.cluster up

cluster-down: venv ## Stop the cluster (and clean up after one whose supervisor was killed)
	@$(BIN)/python -m aikeys_dev.devstack.cluster down

cluster-status: venv ## Is the cluster running, and where
	@$(BIN)/python -m aikeys_dev.devstack.cluster status

clean: ## Remove the virtualenv and local state (not the binary and image cache in ~/.cache/aikeys)
	rm -rf $(VENV) .dev .cluster .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info dev/*.egg-info
