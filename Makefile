# outagewatch — every dependency is installed by this file, into ./.venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## demo: generate a week of simulated reports with seed-like outages, replay them, list the incidents
demo: $(STAMP)
	bash scripts/demo.sh

## test: lint, typecheck and every test
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_replay.py
	$(BIN)/python benchmarks/bench_tick.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_detection.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
