# The two commands: `make run` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test lint typecheck unit bench bench-latency bench-triggers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1"

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e . --group test --group lint
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/python examples/demo.py

lint: $(STAMP_TEST)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP_TEST)
	$(BIN)/python bench/throughput.py

bench-latency: $(STAMP_TEST)
	$(BIN)/python bench/latency.py

bench-triggers: $(STAMP_RUN)
	$(BIN)/python bench/triggers.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache runbell.db*
