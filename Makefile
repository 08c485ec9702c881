# WhatsNext developer commands. `make test` installs what it needs and runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
# `make run` listens on $WHATSNEXT_HOST:$WHATSNEXT_PORT when set (HOST=/PORT= on the command line win).
HOST   ?= $(or $(WHATSNEXT_HOST),127.0.0.1)
PORT   ?= $(or $(WHATSNEXT_PORT),8000)

.PHONY: install run test lint format bench bench-quick slurm slurm-stop clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/whatsnext server --host $(HOST) --port $(PORT)

# Test files run on TEST_WORKERS processes; a file's tests stay together (they share its fixtures).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check whatsnext tests bench
	$(BIN)/ruff format --check whatsnext tests bench

format: $(STAMP)
	$(BIN)/ruff format whatsnext tests bench
	$(BIN)/ruff check --fix whatsnext tests bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

slurm:
	bash scripts/local-slurm.sh start

slurm-stop:
	bash scripts/local-slurm.sh stop

clean:
	rm -rf $(VENV) dist build .pytest_cache .ruff_cache
