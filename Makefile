# outagewatch — every dependency is installed by this file, into ./.venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WARM := $(VENV)/.warm
KERNELS := $(wildcard src/outagewatch/detect/*.py) src/outagewatch/linescan.py src/outagewatch/geo.py \
	src/outagewatch/pipeline/dedup.py src/outagewatch/pipeline/sources.py \
	src/outagewatch/store/grouping.py src/outagewatch/jit.py
SOURCES := $(shell find src/outagewatch -name '*.py')
BYTECODE := $(VENV)/.bytecode

.PHONY: install demo demo-replay test check lint typecheck unit fast browser bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# numba's cache of the kernels (detection, the line scanner), the same kernels compiled ahead
# of time into one extension (outagewatch/jit.py: replay imports no numba) and the holiday
# table, made again whenever their sources change: no command compiles
$(WARM): $(STAMP) $(KERNELS)
	$(BIN)/python -m outagewatch.runtime.warm
	touch $(WARM)

# the package's bytecode, written again when a module changes (where PYTHONDONTWRITEBYTECODE
# is set, Python would otherwise compile every module in every process)
$(BYTECODE): $(WARM) $(SOURCES)
	$(BIN)/python -m compileall -q src/outagewatch
	touch $(BYTECODE)

install: $(BYTECODE)

## demo: the live demo on http://127.0.0.1:8000/ — simulated crowd, outages every few minutes
demo: $(BYTECODE)
	$(BIN)/outagewatch demo --port $${PORT:-8000}

## demo-replay: simulate a week of reports with seed-like outages, replay them, list the incidents
demo-replay: $(BYTECODE)
	bash scripts/demo.sh

## test: lint, typecheck and every test
test: lint typecheck unit

## check: the fast tier for the inner loop (under a minute): lint, typecheck, the tests that
## start no server, browser, PostgreSQL or NATS and take under half a second each
## (tests/conftest.py says which)
check: lint typecheck fast

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(BYTECODE) browser
	$(BIN)/pytest -n 2 -q

fast: $(BYTECODE)
	$(BIN)/pytest -n 2 -q -m "not integration and not slow"

## browser: Debian's chromium for the browser tests (installed when missing)
browser:
	sh scripts/ensure_chromium.sh

bench: $(BYTECODE)
	$(BIN)/python benchmarks/bench_replay.py
	$(BIN)/python benchmarks/bench_tick.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_detection.py
	$(BIN)/python benchmarks/bench_http.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_scaleout.py
	$(BIN)/python benchmarks/bench_soak.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache src/outagewatch/_kernels_aot*
