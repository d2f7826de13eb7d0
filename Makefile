# Two commands matter (see README): `make demo` and `make test`.
# Both create .venv on first use and install taylorode into it (editable).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@

demo: $(STAMP)
	$(BIN)/python examples/showcase.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_explicit.py
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_scalar_field.py --orders 8 12 16 20 24
	$(BIN)/python benchmarks/bench_control.py
	$(BIN)/python benchmarks/bench_workprecision.py
	$(BIN)/python benchmarks/bench_batch.py
	$(BIN)/python benchmarks/bench_switch.py
	$(BIN)/python benchmarks/bench_stiff.py --ho 1,2 2,3 3,4

clean:
	rm -rf $(VENV) .pytest_cache dist build
