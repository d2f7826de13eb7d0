# Two commands matter (see README): `make demo` and `make test`.
# Both create .venv on first use and install taylorode into it (editable).
# `make test` runs the test suite (examples included, with short horizons), builds the
# documentation site with `mkdocs build --strict`, and checks that the wheel installs and
# imports in a clean virtual environment.
# `make site-check` (a developer check, not in `make test`: it needs Chromium) builds the
# docs and opens its pages in headless Chromium (tools/check_site.py).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test test-oldest docs site-check wheel-check bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@

demo: $(STAMP)
	$(BIN)/python examples/showcase.py

# Two workers (the suite is dominated by single-threaded XLA compiles; 8.5 min instead
# of 13 on the 2-core reference machine), one test file per worker so that each file's
# compiled functions and module fixtures are built once.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
	$(MAKE) docs
	$(MAKE) wheel-check

# No --quiet: with it mkdocs 1.6 drops the warnings before --strict counts them, and a
# broken link or anchor would pass.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# The built site in headless Chromium, offline (every host but localhost unresolvable):
# the math of every API page typeset by the vendored MathJax, the examples' sources and
# the home page's code shown, no failed requests, no list item left unrendered in a
# paragraph. Needs Chromium (`apt-get install chromium`, or CHROMIUM=/path/to/chrome);
# CI has none, so `make test` does not run it.
site-check: docs
	$(BIN)/python tools/check_site.py

# Build the wheel, install it into a fresh virtual environment (not editable, outside the
# source tree) and import it there.
wheel-check: $(STAMP)
	rm -rf build/wheel build/wheel-venv
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir build/wheel .
	$(PYTHON) -m venv build/wheel-venv
	build/wheel-venv/bin/python -m pip install --quiet build/wheel/taylorode-*.whl
	cd build && wheel-venv/bin/python -c "import taylorode, diffrax, jax.numpy as jnp; \
	  assert 'wheel-venv' in taylorode.__file__, taylorode.__file__; \
	  sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: -y), taylorode.Taylor(order=4), 0.0, 1.0, 0.1, jnp.array(1.0)); \
	  assert abs(float(sol.ys[-1]) - 0.36787944) < 1e-6; print('wheel OK:', taylorode.__version__, taylorode.__file__)"

# A smoke subset of the suite on the oldest releases that pyproject.toml allows (pinned in
# .ci/oldest.txt), in its own virtual environment: build/oldest-venv. CI runs it after
# `make test` (.ci/run); most of its time is pip installing those releases.
OLDEST := build/oldest-venv
OLDEST_STAMP := $(OLDEST)/.installed
# The smoke subset: diffeqsolve interop, Taylor() and TaylorController, the recurrence
# engine, HermiteObreschkoff (about a minute on two cores).
ENGINE_TESTS := tests/test_engine.py::test_
HO_TESTS := tests/test_hermite_obreschkoff.py::test_
OLDEST_TESTS := tests/test_interop.py tests/test_protocol.py tests/test_controller.py \
  $(ENGINE_TESTS)high_order_against_mpmath $(ENGINE_TESTS)mlp_vector_field_matches_jvp_tower \
  $(ENGINE_TESTS)custom_taylor_rule_is_used $(ENGINE_TESTS)unsupported_primitive_names_it_and_where \
  $(ENGINE_TESTS)solver_with_recurrence_matches_kepler \
  $(HO_TESTS)convergence_order $(HO_TESTS)robertson $(HO_TESTS)van_der_pol_stiff_beats_kvaerno5_steps \
  '$(HO_TESTS)vmap_and_grad_against_finite_differences[HermiteObreschkoff]' \
  $(HO_TESTS)dense_output_is_hermite_interpolant $(HO_TESTS)bad_input

$(OLDEST_STAMP): pyproject.toml .ci/oldest.txt
	rm -rf $(OLDEST)
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet --constraint .ci/oldest.txt -e . \
	  pytest pytest-xdist hypothesis mpmath
	touch $@

test-oldest: $(OLDEST_STAMP)
	$(OLDEST)/bin/python -c "import importlib.metadata as m, pathlib; \
	  pins = [l.split('==') for l in pathlib.Path('.ci/oldest.txt').read_text().split() if '==' in l]; \
	  bad = [(n, v, m.version(n)) for n, v in pins if m.version(n) != v]; \
	  assert not bad, bad; print('oldest:', ', '.join('=='.join(p) for p in pins))"
	$(OLDEST)/bin/python -m pytest -q -n 2 --dist loadfile -p no:cacheprovider $(OLDEST_TESTS)

# Every benchmark script, then the tables of docs/benchmarks.md refreshed from the
# results files they write (benchmarks/results_*.md).
bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_explicit.py
	$(BIN)/python benchmarks/bench_engine.py
	$(BIN)/python benchmarks/bench_scalar_field.py
	$(BIN)/python benchmarks/bench_control.py
	$(BIN)/python benchmarks/bench_workprecision.py
	$(BIN)/python benchmarks/bench_batch.py
	$(BIN)/python benchmarks/bench_batch.py --n 10000 --out benchmarks/results_batch_10000.md
	$(BIN)/python benchmarks/bench_kernels.py
	$(BIN)/python benchmarks/bench_wide.py
	$(BIN)/python benchmarks/bench_floor.py
	$(BIN)/python benchmarks/bench_ensemble.py
	$(BIN)/python benchmarks/bench_switch.py
	$(BIN)/python benchmarks/bench_stiff.py --ho 1,2 2,3 3,4 --problems robertson vdp1e3 vdp1e6 brusselator
	$(BIN)/python benchmarks/bench_stiff.py --problems hires pollu oregonator robertson vdp1e3 \
	  --tols 1e-4 1e-6 1e-8 --solvers Kvaerno5+PID "scipy Radau" "CVODE(BDF)" VOHO+PID HO XHO \
	  --ho 1,2 2,3 --xho 1,2 --out benchmarks/results_stiff_default.md --no-plot
	$(BIN)/python benchmarks/bench_stiff.py --problems brusselator1000 --tols 1e-4 1e-6 1e-8 \
	  --solvers Kvaerno5+PID "Kvaerno5+PID banded" "scipy Radau" "CVODE(BDF)" "CVODE(BDF) banded" \
	  VOHO+PID "VOHO+PID banded" --ho --xho --repeats 2 --out benchmarks/results_stiff_pde.md --no-plot
	$(BIN)/python benchmarks/bench_stiff.py --problems brusselator10000 --tols 1e-4 1e-6 1e-8 \
	  --solvers "Kvaerno5+PID banded" "scipy Radau" "CVODE(BDF) banded" "VOHO+PID banded" \
	  --ho --xho --repeats 2 --out benchmarks/results_stiff_pde10000.md --no-plot
	$(BIN)/python benchmarks/bench_sensitivity.py
	$(BIN)/python benchmarks/bench_nonsmooth.py
	$(BIN)/python benchmarks/bench_compile.py
	$(BIN)/python benchmarks/bench_compile_battery.py
	$(BIN)/python benchmarks/bench_compile.py --xla-flags=--xla_cpu_use_fusion_emitters=false \
	  --out benchmarks/results_compile_no_emitters.md
	$(BIN)/python benchmarks/render_docs.py

# Smoke runs: every script end to end in a tiny configuration; the results go to
# taylorode-bench-quick/ in the temporary folder, never to benchmarks/results_*.md.
bench-quick: $(BENCH_STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache dist build site
