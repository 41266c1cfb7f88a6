# The two commands a new user needs: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The repository keeps the operator package in ./operator (installed as splitlearn_operator).
# Never let the working directory shadow the standard library's `operator` module.
export PYTHONSAFEPATH := 1

.DEFAULT_GOAL := help
.PHONY: help setup demo test lint typecheck pytest format clean bench bench-7b

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

lint: setup typecheck  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	@mkdir -p .cache/typecheck && ln -sfn ../../operator .cache/typecheck/splitlearn_operator
	$(BIN)/mypy -p splitcore -p splitlearn_operator

pytest: setup
	$(BIN)/pytest

bench: setup  ## split vs byte copy vs naive on a 1.42 GB GPT-2 medium (a few minutes)
	$(BIN)/python benchmarks/split_bench.py

bench-7b: setup  ## the same at scale: a 13.5 GB Llama-2-7B-shaped checkpoint (~20 min, ~30 GB disk)
	$(BIN)/python benchmarks/split_bench.py --model llama-7b --skip-naive

format: setup  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove the demo output and caches (keeps .venv)
	rm -rf models demo .pytest_cache .mypy_cache .ruff_cache .cache/typecheck
