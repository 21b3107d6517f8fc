# seq2seq service — every target uses the project virtualenv in .venv/ and creates it first.
# `make help` lists the targets.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test lint format bench-rnn serve clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing seq2seq-service[dev] (pinned versions)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(STAMP)  ## create .venv/ and install the project with its dev extra

test: $(STAMP)  ## run the whole test suite
	@echo "==> running the test suite"
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff lint and format check
	@echo "==> ruff"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-rnn: $(STAMP)  ## training-step time and memory: our SimpleRNN vs keras.layers.SimpleRNN
	@echo "==> benchmarking the explicit-BPTT SimpleRNN against Keras's (several minutes)"
	$(BIN)/python -m seq2seq.bench_rnn

serve:  ## (not yet built) fetch data, train, export and start the gRPC server
	@echo "make serve is not built yet: the gRPC service is an open issue. See README.md."
	@exit 1

clean:  ## remove caches (keeps .venv, data and models)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
